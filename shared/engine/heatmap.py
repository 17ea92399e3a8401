"""Grad-CAM's arithmetic, backend-neutral (``keras.ops``).

Channel weights are the spatial mean of the class score's gradients; the weighted channel sum is
ReLU'd and divided by its maximum. An all-zero map stays zero (never NaN) and is flagged.
"""

from __future__ import annotations

from typing import Any


def cam_from_gradients(features: Any, grads: Any) -> tuple[Any, Any]:
    """(N,h,w,C) features and gradients → (normalised heatmaps (N,h,w), per-sample max)."""
    from keras import ops

    weights = ops.mean(grads, axis=(1, 2))  # (N, C)
    cam = ops.relu(ops.einsum("nhwc,nc->nhw", features, weights))
    peak = ops.max(cam, axis=(1, 2))  # (N,)
    safe = ops.where(peak > 0, peak, ops.ones_like(peak))
    heat = ops.where(ops.reshape(peak > 0, (-1, 1, 1)), cam / ops.reshape(safe, (-1, 1, 1)), 0.0)
    return heat, peak


def select_scores(logits: Any, class_index: Any) -> tuple[Any, Any]:
    """Score of the requested class per sample; a negative index means the top-1 class."""
    from keras import ops

    top1 = ops.cast(ops.argmax(logits, axis=-1), class_index.dtype)
    chosen = ops.where(class_index < 0, top1, class_index)
    score = ops.take_along_axis(logits, ops.expand_dims(chosen, 1), axis=1)[:, 0]
    return score, chosen
