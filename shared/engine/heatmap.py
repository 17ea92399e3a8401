"""CAM arithmetic shared by every method, backend-neutral (``keras.ops``).

A method (``convatlas.shared.engine.cams``) gives a raw map; ``normalise`` ReLUs it and divides by
its maximum. An all-zero map stays zero (never NaN) and is flagged by its zero peak.
Grad-CAM's channel weights are the spatial mean of the class score's gradients.
"""

from __future__ import annotations

from typing import Any


def normalise(cam: Any) -> tuple[Any, Any]:
    """(N,h,w) raw maps → (ReLU'd maps divided by their maxima, the maxima (N,)); zero stays zero."""
    from keras import ops

    cam = ops.relu(cam)
    peak = ops.max(cam, axis=(1, 2))  # (N,)
    safe = ops.where(peak > 0, peak, ops.ones_like(peak))
    heat = ops.where(ops.reshape(peak > 0, (-1, 1, 1)), cam / ops.reshape(safe, (-1, 1, 1)), 0.0)
    return heat, peak


def grad_cam_map(features: Any, grads: Any) -> Any:
    """Grad-CAM's raw map: channels weighted by the spatial mean of their gradients, summed."""
    from keras import ops

    weights = ops.mean(grads, axis=(1, 2))  # (N, C)
    return ops.einsum("nhwc,nc->nhw", features, weights)


def cam_from_gradients(features: Any, grads: Any) -> tuple[Any, Any]:
    """(N,h,w,C) features and gradients → (normalised Grad-CAM heatmaps (N,h,w), per-sample max)."""
    return normalise(grad_cam_map(features, grads))


def select_scores(logits: Any, class_index: Any) -> tuple[Any, Any]:
    """Score of the requested class per sample; a negative index means the top-1 class."""
    from keras import ops

    top1 = ops.cast(ops.argmax(logits, axis=-1), class_index.dtype)
    chosen = ops.where(class_index < 0, top1, class_index)
    score = ops.take_along_axis(logits, ops.expand_dims(chosen, 1), axis=1)[:, 0]
    return score, chosen


def method_outputs(
    logits: Any, chosen: Any, feats: Any, grads: Any, gradient_methods: Any,
    activation_methods: Any, return_features: bool,
) -> dict[str, Any]:
    """What a compiled CAM pass returns, from its float32 activations (and their gradients):
    per method ``(heat, peak)``, plus ``logits``, ``chosen`` and, when asked, ``features``.
    The backends' passes (``tf_cam``, ``jax_cam``) differ only in how they get these inputs."""
    out: dict[str, Any] = {"logits": logits, "chosen": chosen}
    for m in gradient_methods:
        out[m.name] = normalise(m.cam(feats, grads))
    for m in activation_methods:
        out[m.name] = normalise(m.cam(feats))
    if return_features:
        out["features"] = feats
    return out
