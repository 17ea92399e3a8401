"""The engines' one door to a tensor framework: compiled loops and host ↔ device conversion.

``patterns`` and ``gradcam`` call only what this module exports, never TensorFlow itself. The
framework is the one chosen by ``CONVATLAS_BACKEND`` (``convatlas.shared.backend_select``):
``tensorflow`` (default; ``tf_ascent``, ``tf_cam``) or ``jax`` (``jax_ascent``, ``jax_cam``, the
same builders with the same interfaces).
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
) -> Callable[..., Any]:
    """The compiled gradient-ascent loop of one (model, layer): the variable becomes pixels by
    ``parametrisation`` (default: raw pixels), goes through ``transforms`` (default none) and is
    moved by ``optimiser`` (default the book's RMS step); see ``tf_ascent.build_ascent``."""
    return _builders("ascent").build_ascent(features, preprocess, parametrisation, transforms, optimiser)


def build_gradcam(grad_model: Any, preprocess: Callable[[Any], Any]) -> Callable[..., Any]:
    """The compiled Grad-CAM pass of one (model, layer); see ``tf_cam.build_gradcam``."""
    return _builders("cam").build_gradcam(grad_model, preprocess)


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
