"""The engines' one door to a tensor framework: compiled loops and host ↔ device conversion.

The engines (``patterns``, ``cam_runner``, ``faithfulness``, ``unit_maxima``) call only what this
module exports, never TensorFlow itself. The framework is the one chosen by ``CONVATLAS_BACKEND``
(``convatlas.shared.backend_select``): ``tensorflow`` (default; ``tf_ascent``, ``tf_cam``,
``tf_maxima``) or ``jax`` (``jax_*``: the same builders with the same interfaces). Framework-free
rules every backend follows live beside them (``maxima_order``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

PREFIXES = {"tensorflow": "tf", "jax": "jax"}  # backend → its builder modules' prefix


def _framework() -> str:
    """The selected backend; ``BackendError`` for an unknown one or a mismatch with Keras."""
    from convatlas.shared.backend_select import check_backend

    return check_backend()


def _builders(kind: str) -> Any:
    """The selected backend's builder module of ``kind`` (``ascent``, ``cam``)."""
    return importlib.import_module(f"{__name__}.{PREFIXES[_framework()]}_{kind}")


def build_ascent(
    features: Callable[[Any, Any], tuple[Any, Any]],
    preprocess: Callable[[Any], Any],
    parametrisation: Any = None,
    transforms: Any = (),
    optimiser: Any = None,
    alpha: bool = False,
) -> Callable[..., Any]:
    """The compiled gradient-ascent loop of one (model, layer): the variable becomes pixels by
    ``parametrisation`` (default: raw pixels), goes through ``transforms`` (default none) and is
    moved by ``optimiser`` (default the book's RMS step); with ``alpha`` it also returns MaCo's
    transparency map; see ``tf_ascent.build_ascent``."""
    builders = _builders("ascent")
    if alpha:
        return builders.build_ascent(features, preprocess, parametrisation, transforms, optimiser, alpha=True)
    return builders.build_ascent(features, preprocess, parametrisation, transforms, optimiser)


def build_channel_maxima(
    trunk: Any, preprocess: Callable[[Any], Any], side: int
) -> Callable[[np.ndarray], list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]]:
    """The compiled dataset-examples pass of one trunk (a Keras model: pixels → its maps) for
    uint8 photos (N, ``side``, ``side``, 3): NumPy in; per map, NumPy out: the channels' maxima
    (N, C) float32, the flat index ``y·W + x`` of each first arg-max (N, C) in the order of
    ``maxima_order``, and the map's (rows, columns). See ``tf_maxima.build_channel_maxima``."""
    return _builders("maxima").build_channel_maxima(trunk, preprocess, side)


def cam_builders() -> Any:
    """The CAM family's compiled passes (``build_cam_pass``, ``build_scored_passes``, ``jit``):
    ``tf_cam`` or ``jax_cam``."""
    return _builders("cam")


def constant(value: Any, dtype: str | None = None) -> Any:
    """A framework tensor from a NumPy array or a Python scalar."""
    if _framework() == "jax":
        import jax.numpy as jnp

        return jnp.asarray(value, dtype=dtype)
    from convatlas.shared.tf_env import import_tf

    tf = import_tf()
    return tf.constant(value, dtype=getattr(tf, dtype) if dtype else None)


def to_numpy(tensor: Any) -> np.ndarray:
    """A framework tensor as a NumPy array."""
    return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)
