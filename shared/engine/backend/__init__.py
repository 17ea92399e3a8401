"""The engines' one door to a tensor framework: compiled loops and host ↔ device conversion.

``patterns`` and ``gradcam`` call only what this module exports, never TensorFlow itself. The
framework follows ``KERAS_BACKEND`` (``tensorflow``, the only one implemented today); a JAX
backend is a sibling pair of modules (``jax_ascent``, ``jax_cam``) with the same builders, plus a
branch in ``_framework``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np


def _framework() -> str:
    name = os.environ.get("KERAS_BACKEND", "tensorflow")
    if name != "tensorflow":
        raise NotImplementedError(
            f"KERAS_BACKEND={name!r}: the engines have a TensorFlow backend only"
        )
    return name


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
    _framework()
    from convatlas.shared.engine.backend.tf_ascent import build_ascent as build

    return build(features, preprocess, parametrisation, transforms, optimiser)


def build_gradcam(grad_model: Any, preprocess: Callable[[Any], Any]) -> Callable[..., Any]:
    """The compiled Grad-CAM pass of one (model, layer); see ``tf_cam.build_gradcam``."""
    _framework()
    from convatlas.shared.engine.backend.tf_cam import build_gradcam as build

    return build(grad_model, preprocess)


def cam_builders() -> Any:
    """The CAM family's compiled passes (``build_cam_pass``, ``build_scored_passes``): ``tf_cam``."""
    _framework()
    from convatlas.shared.engine.backend import tf_cam

    return tf_cam


def constant(value: Any, dtype: str | None = None) -> Any:
    """A framework tensor from a NumPy array or a Python scalar."""
    _framework()
    from convatlas.shared.tf_env import import_tf

    tf = import_tf()
    return tf.constant(value, dtype=getattr(tf, dtype) if dtype else None)


def to_numpy(tensor: Any) -> np.ndarray:
    """A framework tensor as a NumPy array."""
    return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)
