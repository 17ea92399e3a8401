"""JAX: the lucid style's warp with TensorFlow's gradient, so both backends ascend alike.

``transforms.Warp`` resamples with ``keras.ops.image.affine_transform``. Its forward pass agrees
across backends (to 5e-5 on 0–255 pixels), but its gradient does not: TensorFlow's registered
gradient of ``ImageProjectiveTransformV3`` is the output gradient warped back by the *inverse*
transform (bilinear, fill 0), an approximation of the adjoint of bilinear sampling, while JAX
differentiates the sampling exactly. Over a lucid ascent the difference grows to ~15 % in the
final objective. TensorFlow is the reference (its results came first and share keys with
JAX's), so here the warp gets TensorFlow's rule as a ``jax.custom_vjp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convatlas.shared.engine.transforms import Transform, Warp


def _affine(images: Any, flat: Any, fill_value: float) -> Any:
    from keras import ops

    return ops.image.affine_transform(images, flat, interpolation="bilinear",
                                      fill_mode="constant", fill_value=fill_value)


def _inverse(flat: Any) -> Any:
    """The flat form of each map's inverse (as TensorFlow's gradient computes it)."""
    import jax.numpy as jnp

    n = flat.shape[0]
    m = jnp.concatenate([flat, jnp.ones((n, 1), flat.dtype)], axis=1).reshape(n, 3, 3)
    inv = jnp.linalg.inv(m).reshape(n, 9)
    return inv[:, :8] / inv[:, 8:9]


def _warp_fn(fill_value: float) -> Any:
    import jax

    @jax.custom_vjp
    def warp(images: Any, flat: Any) -> Any:
        return _affine(images, flat, fill_value)

    def forward(images: Any, flat: Any) -> Any:
        return warp(images, flat), flat

    def backward(flat: Any, g: Any) -> Any:
        return _affine(g, _inverse(flat), 0.0), None

    warp.defvjp(forward, backward)
    return warp


def apply_transforms(transforms: Sequence[Transform], x: Any, u: Any) -> Any:
    """``transforms.apply_transforms``, with every ``Warp`` differentiated as TensorFlow does."""
    col = 0
    for t in transforms:
        uu = u[:, col : col + t.n_random]
        if isinstance(t, Warp):
            x = _warp_fn(t.fill * 255.0)(x, t.flat_matrix(x, uu))
        else:
            x = t(x, uu)
        col += t.n_random
    return x
