"""TensorFlow: the dataset-examples pass, per channel the maximum over positions and its first
arg-max, compiled once per (trunk, side).

Reached only through ``convatlas.shared.engine.backend`` (``build_channel_maxima``). Only the
per-channel maxima and arg-maxima leave the compiled function, never the feature maps; NumPy in,
NumPy out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convatlas.shared.engine.backend.maxima_order import argmax_block
from convatlas.shared.tf_env import import_tf

Maxima = list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]


def build_channel_maxima(
    trunk: Any, preprocess: Callable[[Any], Any], side: int
) -> Callable[[np.ndarray], Maxima]:
    """Compile ``trunk`` (a Keras model: pixels → one or more (N, H, W, C) maps) for uint8 photos
    (N, ``side``, ``side``, 3): per output, the maxima (N, C) float32, the flat index ``y·W + x``
    (N, C) int of the first arg-max (:mod:`maxima_order`) and the map's (rows, columns)."""
    tf = import_tf()

    @tf.function(input_signature=[tf.TensorSpec([None, side, side, 3], tf.uint8)])
    def maxima(x: Any) -> Any:
        outs = trunk(preprocess(tf.cast(x, tf.float32)), training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        res = []
        for o in outs:
            o = tf.cast(o, tf.float32)
            h, w = int(o.shape[1]), int(o.shape[2])
            top, first = _max_and_first(tf, o, argmax_block(h, w))
            shape = tf.constant([0, h, w, int(o.shape[3])])
            res.append((top, first, shape[1:3]))
        return res

    def run(images: np.ndarray) -> Maxima:
        out: Maxima = []
        for top, first, hw in maxima(images):
            height, width = (int(v) for v in np.asarray(hw))
            out.append((np.asarray(top, np.float32), np.asarray(first), (height, width)))
        return out

    return run


def _max_and_first(tf: Any, o: Any, block: int) -> tuple[Any, Any]:
    """Per (photo, channel) of a float32 (N, H, W, C) map: the maximum and the flat index
    ``y·W + x`` of its first occurrence in block order (``block``×``block`` blocks in
    row-major order, row-major inside a block; plain row-major order for ``block`` 1).

    A whole-map ``max_pool_with_argmax`` gives the row-major first directly but is a slow
    kernel; on big maps a ``block``-pooled map (one fast pass) is searched instead, then only
    the winning block of each (photo, channel) is read (``gather_nd``): 3-4× less time on
    VGG16's block1-3 maps. With a unique maximum both orders give the same position.
    """
    h, w, c = (int(v) for v in o.shape[1:])
    src = o if block == 1 else tf.nn.max_pool2d(o, ksize=block, strides=block, padding="VALID")
    hc, wc = h // block, w // block
    top, idx = tf.nn.max_pool_with_argmax(src, ksize=(hc, wc), strides=(hc, wc), padding="VALID")
    top = tf.reshape(top, [-1, c])
    cell = tf.cast(tf.reshape(idx, [-1, c]) // c, tf.int32)
    if block == 1:
        return top, cell
    cy, cx = cell // wc, cell % wc
    d = tf.range(block * block, dtype=tf.int32)
    ys, xs = cy[..., None] * block + d // block, cx[..., None] * block + d % block
    n = tf.shape(o)[0]
    nn = tf.broadcast_to(tf.range(n)[:, None, None], tf.shape(ys))
    cc = tf.broadcast_to(tf.range(c)[None, :, None], tf.shape(ys))
    vals = tf.gather_nd(o, tf.stack([nn, ys, xs, cc], -1))
    j = tf.reduce_min(tf.where(vals >= top[..., None], d[None, None, :], block * block), axis=-1)
    return top, (cy * block + j // block) * w + cx * block + j % block
