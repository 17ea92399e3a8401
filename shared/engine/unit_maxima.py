"""Dataset examples' forward pass: for a batch of photos, each unit's maximum and its position.

A filter's pattern says what the unit *could* respond to; its top photos say what it *does*
respond to. This module is the engine behind ``convatlas examples`` and the fleet's examples
jobs (``convatlas.shared.jobs.examples_map``).

**The score** of a photo for unit ``c`` of layer ``L`` is the channel's maximum over positions,
``max_{y,x} A_L(photo)[y, x, c]``, where ``A_L`` is the layer's output as Keras defines it (after
its built-in activation: post-ReLU for VGG's convolutions) on the photo resized to the model's
square input (``side``×``side``, as for Grad-CAM) and preprocessed for the model, in float32 by
default. The **position** is that arg-max; on ties (a constant map, saturated activations) the
first in a fixed order: row-major, by blocks of 4 or 2 pixels on big maps (:func:`argmax_block`),
so (0, 0) for a constant map. The **patch** is the unit's receptive field around that position
(``convatlas.shared.engine.receptive_fields``, ``convatlas.shared.patches``).

**One forward pass** of the trunk up to the deepest requested layer gives every requested
layer's maxima for a batch of photos (:func:`channel_maxima`); only the per-channel maxima and
arg-maxima leave the compiled function, never the feature maps. The photos' top-k and
statistics are ``convatlas.shared.topk`` and ``convatlas.shared.unit_stats``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from convatlas.shared.engine.backend import build_channel_maxima
from convatlas.shared.engine.backend.maxima_order import argmax_block
from convatlas.shared.topk import TopK

__all__ = ["argmax_block", "channel_maxima", "top_examples"]


def _model_at(lm: Any, side: int, precision: str) -> Any:
    shape = tuple(lm.model.inputs[0].shape[1:3])
    if shape in ((None, None), (side, side)):
        return lm.at_precision(precision)
    return lm.any_size_model(precision)


def _maxima_fn(lm: Any, layers: tuple[str, ...], side: int, precision: str) -> Any:
    """The compiled pass (``backend.build_channel_maxima``), once per (layers, side, precision):
    uint8 photos → per layer (max over positions, first arg-max, map size)."""
    key = ("examples", layers, side, precision)
    if key not in lm.compiled:
        import keras

        model = _model_at(lm, side, precision)
        trunk = keras.Model(model.inputs, [model.get_layer(n).output for n in layers])
        lm.compiled[key] = build_channel_maxima(trunk, lm.preprocess, side)
    return lm.compiled[key]


def channel_maxima(
    lm: Any, layers: Sequence[str], images: np.ndarray, precision: str = "float32",
) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """One forward pass of the trunk for a batch of photos (N, side, side, 3) uint8.

    Returns, per layer: the scores (N, C) float32 (each channel's maximum over positions),
    the positions (N, C, 2) int32 as (row, column) of the first arg-max (row-major order, by
    blocks on big maps: :func:`argmax_block`), and the map's (rows, columns).
    """
    layers = tuple(layers)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected (N, side, side, 3) photos, got {images.shape}")
    fn = _maxima_fn(lm, layers, int(images.shape[1]), precision)
    outs = fn(images.astype(np.uint8))
    res: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
    for name, (top, first, (height, width)) in zip(layers, outs, strict=True):
        first = np.asarray(first).astype(np.int64)
        pos = np.stack([first // width, first % width], axis=-1).astype(np.int32)
        res[name] = (np.asarray(top, np.float32), pos, (height, width))
    return res


def top_examples(
    lm: Any, photos: Iterable[tuple[str, np.ndarray]], layers: Sequence[str], k: int = 9,
    side: int = 224, batch: int = 32, precision: str = "float32",
) -> dict[str, TopK]:
    """The top-k per unit of ``layers`` over ``photos`` ((sha256, model input side×side×3
    uint8) pairs), ``batch`` photos per forward pass, merged batch by batch."""
    from convatlas.shared.images.decode import model_square

    layers = tuple(layers)
    result: dict[str, TopK] = {}
    chunk: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if not chunk:
            return
        x = np.stack([model_square(img, side) if img.shape[:2] != (side, side) else img
                      for _, img in chunk])
        for name, (scores, pos, _) in channel_maxima(lm, layers, x, precision).items():
            part = TopK.from_scores([s for s, _ in chunk], scores, pos, k)
            result[name] = part if name not in result else result[name].merge(part)
        chunk.clear()

    for item in photos:
        chunk.append(item)
        if len(chunk) >= batch:
            flush()
    flush()
    return result
