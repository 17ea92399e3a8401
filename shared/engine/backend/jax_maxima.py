"""JAX: the dataset-examples pass, per channel the maximum over positions and its first arg-max;
the sibling of ``tf_maxima`` with the same interface and the same tie order (``maxima_order``).

Reached only through ``convatlas.shared.engine.backend`` (``build_channel_maxima``). One
``jax.jit`` function per (trunk, side) with the trunk's weights as arguments
(``model.stateless_call``); only the maxima and arg-maxima leave it, never the feature maps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convatlas.shared.engine.backend.maxima_order import argmax_block

Maxima = list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]


def build_channel_maxima(
    trunk: Any, preprocess: Callable[[Any], Any], side: int
) -> Callable[[np.ndarray], Maxima]:
    """Compile ``trunk`` (pixels → one or more (N, H, W, C) maps) for uint8 photos (N, ``side``,
    ``side``, 3): per output, the maxima (N, C) float32, the flat index ``y·W + x`` (N, C) of the
    first arg-max in ``maxima_order``'s order, and the map's (rows, columns)."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def maxima(x: Any, trainable: Any, non_trainable: Any) -> Any:
        xp = preprocess(jnp.asarray(x, jnp.float32))
        outs, _ = trunk.stateless_call(trainable, non_trainable, xp, training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return [_max_and_first(jnp.asarray(o, jnp.float32)) for o in outs]

    def run(images: np.ndarray) -> Maxima:
        if images.shape[1:] != (side, side, 3):
            raise ValueError(f"expected (N, {side}, {side}, 3) photos, got {images.shape}")
        trainable = [v.value for v in trunk.trainable_variables]
        non_trainable = [v.value for v in trunk.non_trainable_variables]
        out: Maxima = []
        for top, first, hw in maxima(np.asarray(images, np.uint8), trainable, non_trainable):
            out.append((np.asarray(top, np.float32), np.asarray(first), (int(hw[0]), int(hw[1]))))
        return out

    return run


def _max_and_first(o: Any) -> tuple[Any, Any, tuple[int, int]]:
    """Per (photo, channel) of a float32 (N, H, W, C) map: the maximum, and the flat index
    ``y·W + x`` of its first occurrence in block order (``argmax_block``): the map is laid out
    in that order and ``argmax`` takes the first maximum."""
    import jax.numpy as jnp

    n, h, w, c = o.shape
    b = argmax_block(h, w)
    hb, wb = h // b, w // b
    ordered = o.reshape(n, hb, b, wb, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * w, c)
    top = jnp.max(ordered, axis=1)
    p = jnp.argmax(ordered, axis=1).astype(jnp.int32)  # position in block order
    cell, within = p // (b * b), p % (b * b)
    y = (cell // wb) * b + within // b
    x = (cell % wb) * b + within % b
    return top, y * w + x, (int(h), int(w))
