"""Dataset examples: for every unit (channel) of a layer, the photos that excite it most.

A filter's pattern says what the unit *could* respond to; its top photos say what it *does*
respond to. This module is the library behind ``convatlas examples`` and the fleet's examples
jobs (``convatlas.shared.jobs.examples``): the forward pass, the score, the mergeable top-k, the
receptive-field geometry and the patch crops.

**The score** of a photo for unit ``c`` of layer ``L`` is the channel's maximum over positions,
``max_{y,x} A_L(photo)[y, x, c]``, where ``A_L`` is the layer's output as Keras defines it (after
its built-in activation: post-ReLU for VGG's convolutions) on the photo resized to the model's
square input (``side``×``side``, as for Grad-CAM) and preprocessed for the model, in float32 by
default. The **position** is that arg-max; on ties (a constant map, saturated activations) the
first in a fixed order: row-major, by blocks of 4 or 2 pixels on big maps (:func:`argmax_block`),
so (0, 0) for a constant map. The
**patch** is the unit's receptive field around that position, mapped back onto the photo and
cropped from it (see :class:`Geometry`); parts of the field outside the photo are black.

**One forward pass** of the trunk up to the deepest requested layer gives every requested
layer's maxima for a batch of photos (:func:`channel_maxima`); only the per-channel maxima and
arg-maxima leave the compiled function, never the feature maps.

**The merge** (:meth:`TopK.merge`) is a join: the result depends only on the *set* of candidates
seen, so it is associative, commutative and idempotent. Candidates are keyed by (photo sha256,
position); a photo counts once per unit (its best candidate), and the order is score descending,
then sha256, then position, so equal scores rank the same way in every merge order. A
redelivered batch therefore changes nothing. A :class:`TopK` holds ``k`` candidates per unit and
the sha256 of the photos they reference, so memory is O(k × channels), never O(photos).
Per-unit statistics (:class:`UnitStats`: photos seen, mean and peak of the score, how often the
unit fired) are sums, so they are added once per batch, guarded by the batch's id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CROP_SIDE",
    "Axis",
    "Candidate",
    "Geometry",
    "GeometryError",
    "TopK",
    "UnitStats",
    "channel_maxima",
    "crop_region",
    "layer_geometry",
    "mosaic_side",
    "patch",
    "receptive_fields",
    "top_examples",
]

#: Long side of the photo decode that patches are cropped from (a reduced decode for JPEGs).
CROP_SIDE = 768
_EMPTY = -1


class GeometryError(ValueError):
    """The layer graph has a layer whose receptive field this module cannot compute."""


# --- receptive fields ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a feature map in input-pixel terms.

    ``size``: the map's length; ``jump``: input pixels between neighbouring units; ``rf``: the
    receptive field's length; ``start``: the first input pixel of unit 0's field (negative when
    the field reaches into the padding). Unit ``i`` sees input pixels
    ``[start + i*jump, start + i*jump + rf)``. A unit after a global pooling sees everything:
    ``jump`` 0, ``start`` 0, ``rf`` the input's length.
    """

    size: int
    jump: int
    rf: int
    start: int

    def span(self, i: int) -> tuple[int, int]:
        a = self.start + i * self.jump
        return a, a + self.rf


@dataclass(frozen=True)
class Geometry:
    """Receptive-field geometry of one layer for an input of ``input_hw`` pixels."""

    layer: str
    input_hw: tuple[int, int]
    rows: Axis
    cols: Axis

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.size, self.cols.size

    @property
    def rf(self) -> tuple[int, int]:
        return self.rows.rf, self.cols.rf

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), half-open, in input pixels; may extend past the input."""
        t, b = self.rows.span(y)
        left, r = self.cols.span(x)
        return t, left, b, r

    def clipped_box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """:meth:`box` clipped to the input."""
        t, left, b, r = self.box(y, x)
        h, w = self.input_hw
        return max(0, t), max(0, left), min(h, b), min(w, r)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = tuple(v)
    return int(a), int(b)


def _window(ax: Axis, k: int, s: int, d: int, padding: str) -> Axis:
    """A convolution or pooling window (kernel ``k``, stride ``s``, dilation ``d``) on ``ax``."""
    keff = d * (k - 1) + 1
    n = ax.size
    if padding == "same":
        out = -(-n // s)
        pad = max((out - 1) * s + keff - n, 0) // 2  # TF/Keras: the extra pixel goes last
    elif padding == "valid":
        out = (n - keff) // s + 1
        pad = 0
    else:
        raise GeometryError(f"padding {padding!r} is not supported")
    if out < 1:
        raise GeometryError(f"a window of {keff} does not fit a map of {n}")
    if ax.jump == 0:  # already global
        return Axis(out, 0, ax.rf, 0)
    return Axis(out, ax.jump * s, ax.rf + (keff - 1) * ax.jump, ax.start - pad * ax.jump)


def _union(axes: Sequence[Axis], layer: str) -> Axis:
    """The field of an element-wise merge (Add, Concatenate…) of maps of the same size."""
    if len({a.size for a in axes}) > 1:
        raise GeometryError(f"{layer}: inputs of different sizes")
    if any(a.jump == 0 for a in axes):
        a0 = next(a for a in axes if a.jump == 0)
        return Axis(axes[0].size, 0, a0.rf, 0)
    if len({a.jump for a in axes}) > 1:
        raise GeometryError(f"{layer}: inputs with different strides")
    lo = min(a.start for a in axes)
    hi = max(a.start + a.rf for a in axes)
    return Axis(axes[0].size, axes[0].jump, hi - lo, lo)


def _parents(layer: Any) -> list[str]:
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return []
    return [t._keras_history.operation.name for t in nodes[0].input_tensors]


def _spatial(layer: Any) -> tuple[int | None, int | None] | None:
    shape = getattr(getattr(layer, "output", None), "shape", None)
    if shape is None or len(shape) != 4:
        return None
    return shape[1], shape[2]


def receptive_fields(model: Any, input_hw: tuple[int, int] | int) -> dict[str, Geometry]:
    """Geometry of every 4-D layer of a Keras functional model, from its layer graph.

    Convolutions (``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D``) and poolings contribute
    their kernel, stride, dilation and padding (``same`` padding puts the odd pixel last, as
    TensorFlow does, which depends on the map's size: hence ``input_hw``); ``ZeroPadding2D``
    and ``Cropping2D`` shift the fields; element-wise layers (activations, normalisation,
    ``Add``, ``Concatenate``…) take the union of their inputs' fields; anything after a global
    pooling or a dense layer (e.g. a squeeze-and-excitation product) sees the whole input.
    Transposed convolutions and resizing are refused (``GeometryError``). Computed sizes are
    checked against the model's own static shapes.
    """
    h, w = (input_hw, input_hw) if isinstance(input_hw, int) else input_hw
    rows: dict[str, Axis] = {}
    cols: dict[str, Axis] = {}
    flat: set[str] = set()  # layers without a 2-D map (global pooling, dense…)
    for layer in model.layers:
        kind = type(layer).__name__
        name = layer.name
        parents = _parents(layer)
        if kind == "InputLayer" or not parents:
            rows[name], cols[name] = Axis(h, 1, 1, 0), Axis(w, 1, 1, 0)
            continue
        spatial = _spatial(layer)
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise GeometryError(f"{name}: only channels_last models are supported")
        if spatial is None:
            flat.add(name)
            continue
        maps = [p for p in parents if p in rows]
        if not maps:
            raise GeometryError(f"{name}: a 2-D map made from no 2-D map ({kind})")
        if kind in ("Conv2DTranspose", "UpSampling2D", "Resizing"):
            raise GeometryError(f"{name}: {kind} has no receptive field supported here")
        if hasattr(layer, "kernel_size") or hasattr(layer, "pool_size"):
            if len(maps) != 1:
                raise GeometryError(f"{name}: a window layer with {len(maps)} inputs")
            k = layer.kernel_size if hasattr(layer, "kernel_size") else layer.pool_size
            ky, kx = _pair(k)
            sy, sx = _pair(layer.strides if layer.strides is not None else k)
            dy, dx = _pair(getattr(layer, "dilation_rate", 1))
            pad = str(layer.padding).lower()
            r = _window(rows[maps[0]], ky, sy, dy, pad)
            c = _window(cols[maps[0]], kx, sx, dx, pad)
        elif kind == "ZeroPadding2D":
            (pt, pb), (pl, pr) = layer.padding
            r0, c0 = rows[maps[0]], cols[maps[0]]
            r = Axis(r0.size + pt + pb, r0.jump, r0.rf, r0.start - pt * r0.jump)
            c = Axis(c0.size + pl + pr, c0.jump, c0.rf, c0.start - pl * c0.jump)
        elif kind == "Cropping2D":
            (ct, cb), (cl, cr) = layer.cropping
            r0, c0 = rows[maps[0]], cols[maps[0]]
            r = Axis(r0.size - ct - cb, r0.jump, r0.rf, r0.start + ct * r0.jump)
            c = Axis(c0.size - cl - cr, c0.jump, c0.rf, c0.start + cl * c0.jump)
        else:  # element-wise: the union of the inputs' fields
            r = _union([rows[p] for p in maps], name)
            c = _union([cols[p] for p in maps], name)
            if any(p in flat for p in parents):  # e.g. squeeze-and-excitation: sees everything
                r, c = Axis(r.size, 0, h, 0), Axis(c.size, 0, w, 0)
        for got, want, axis in ((r.size, spatial[0], "rows"), (c.size, spatial[1], "columns")):
            if want is not None and got != want:
                raise GeometryError(f"{name}: computed {got} {axis}, the model has {want}")
        rows[name], cols[name] = r, c
    return {n: Geometry(n, (h, w), rows[n], cols[n]) for n in rows}


def layer_geometry(model: Any, layer: str, input_hw: tuple[int, int] | int) -> Geometry:
    """The receptive-field geometry of one layer (see :func:`receptive_fields`)."""
    fields_ = receptive_fields(model, input_hw)
    if layer not in fields_:
        raise GeometryError(f"{layer}: not a 2-D feature map of {model.name}")
    return fields_[layer]


# --- crops --------------------------------------------------------------------------------------


def _photo_box(
    photo: np.ndarray, box: tuple[int, int, int, int], input_hw: tuple[int, int]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """The model-input box on the photo, ``(y0, y1, x0, x1)`` rounded outwards (at least one
    pixel), and its part inside the photo, clipped the same way (empty when outside)."""
    hh, ww = photo.shape[:2]
    ih, iw = input_hw
    t, left, b, r = box
    y0, y1 = math.floor(t * hh / ih), math.ceil(b * hh / ih)
    x0, x1 = math.floor(left * ww / iw), math.ceil(r * ww / iw)
    y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    return (y0, y1, x0, x1), (max(0, y0), min(hh, y1), max(0, x0), min(ww, x1))


def crop_region(
    photo: np.ndarray, box: tuple[int, int, int, int], input_hw: tuple[int, int]
) -> np.ndarray:
    """The part of ``photo`` that the model-input box ``(top, left, bottom, right)`` covers.

    The model saw the photo resized to ``input_hw``, so input pixel ``u`` covers photo rows
    ``[u·H/h, (u+1)·H/h)``: the box is scaled by (H/h, W/w) and rounded outwards. Parts of the
    box outside the photo are black.
    """
    (y0, y1, x0, x1), (sy0, sy1, sx0, sx1) = _photo_box(photo, box, input_hw)
    out = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = photo[sy0:sy1, sx0:sx1]
    return out


def patch(
    photo: np.ndarray, box: tuple[int, int, int, int], input_hw: tuple[int, int], tile: int
) -> np.ndarray:
    """:func:`crop_region` resized to ``tile``×``tile`` (the square the unit saw).

    Only the part inside the photo is resized, into its place on a black tile: a deep unit's
    view can be several times the photo (EfficientNet-Lite0's head: 851 px of a 224 input), and
    building that black-padded region at photo scale first cost ~35 ms a patch."""
    (y0, y1, x0, x1), (sy0, sy1, sx0, sx1) = _photo_box(photo, box, input_hw)
    if (sy0, sy1, sx0, sx1) == (y0, y1, x0, x1):  # all inside: the plain resize
        region = photo[y0:y1, x0:x1]
        shrink = region.shape[0] >= tile and region.shape[1] >= tile
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        return cv2.resize(region, (tile, tile), interpolation=interp)
    out = np.zeros((tile, tile, 3), np.uint8)
    if sy1 <= sy0 or sx1 <= sx0:
        return out
    fy, fx = tile / (y1 - y0), tile / (x1 - x0)  # tile pixels per photo pixel
    ty0, ty1 = round((sy0 - y0) * fy), round((sy1 - y0) * fy)
    tx0, tx1 = round((sx0 - x0) * fx), round((sx1 - x0) * fx)
    if ty1 <= ty0 or tx1 <= tx0:
        return out
    visible = photo[sy0:sy1, sx0:sx1]
    shrink = visible.shape[0] >= ty1 - ty0 and visible.shape[1] >= tx1 - tx0
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out[ty0:ty1, tx0:tx1] = cv2.resize(visible, (tx1 - tx0, ty1 - ty0), interpolation=interp)
    return out


def mosaic_side(k: int) -> int:
    """Tiles per row and column of a unit's mosaic of ``k`` examples (3 for k = 9)."""
    return max(1, math.isqrt(k - 1) + 1) if k > 1 else 1


# --- the forward pass ---------------------------------------------------------------------------


def _model_at(lm: Any, side: int, precision: str) -> Any:
    shape = tuple(lm.model.inputs[0].shape[1:3])
    if shape in ((None, None), (side, side)):
        return lm.at_precision(precision)
    return lm.any_size_model(precision)


def _maxima_fn(lm: Any, layers: tuple[str, ...], side: int, precision: str) -> Any:
    """The compiled pass: uint8 photos → per layer (max over positions, first arg-max)."""
    key = ("examples", layers, side, precision)
    if key not in lm.compiled:
        import keras

        from convatlas.shared.tf_env import import_tf

        tf = import_tf()
        model = _model_at(lm, side, precision)
        trunk = keras.Model(model.inputs, [model.get_layer(n).output for n in layers])
        preprocess = lm.preprocess

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

        lm.compiled[key] = maxima
    return lm.compiled[key]


def argmax_block(h: int, w: int) -> int:
    """Side of the blocks the arg-max is searched by on an ``h``×``w`` map (1: no blocks)."""
    for b, area in ((4, 56 * 56), (2, 28 * 28)):
        if h * w >= area and h % b == 0 and w % b == 0:
            return b
    return 1


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


def channel_maxima(
    lm: Any, layers: Sequence[str], images: np.ndarray, precision: str = "float32",
) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """One forward pass of the trunk for a batch of photos (N, side, side, 3) uint8.

    Returns, per layer: the scores (N, C) float32 (each channel's maximum over positions),
    the positions (N, C, 2) int32 as (row, column) of the first arg-max (row-major order, by
    blocks on big maps: :func:`_max_and_first`), and the map's (rows, columns).
    """
    layers = tuple(layers)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected (N, side, side, 3) photos, got {images.shape}")
    fn = _maxima_fn(lm, layers, int(images.shape[1]), precision)
    outs = fn(images.astype(np.uint8))
    res: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
    for name, (top, first, hw) in zip(layers, outs, strict=True):
        height, width = (int(v) for v in np.asarray(hw))
        first = np.asarray(first).astype(np.int64)
        pos = np.stack([first // width, first % width], axis=-1).astype(np.int32)
        res[name] = (np.asarray(top, np.float32), pos, (height, width))
    return res


def _geometry_cached(lm: Any, side: int) -> dict[str, Geometry]:
    key = ("examples-geometry", side)
    if key not in lm.compiled:
        lm.compiled[key] = receptive_fields(_geometry_model(lm, side), side)
    return lm.compiled[key]


def _geometry_model(lm: Any, side: int) -> Any:
    shape = tuple(lm.model.inputs[0].shape[1:3])
    return lm.model if shape in ((None, None), (side, side)) else lm.any_size_model()


def geometry_for(lm: Any, layer: str, side: int) -> Geometry:
    """The receptive-field geometry of ``layer`` of a loaded model at input ``side``."""
    fields_ = _geometry_cached(lm, side)
    if layer not in fields_:
        raise GeometryError(f"{layer}: not a 2-D feature map of {lm.name}")
    return fields_[layer]


# --- the mergeable top-k ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    image_sha256: str
    position: tuple[int, int]  # (row, column) in the layer's map
    score: float


@dataclass(eq=False)
class TopK:
    """The best ``k`` candidates per unit of one layer (see the module docstring).

    ``shas`` is sorted and holds only referenced photos; ``photo`` (C, k) indexes it (-1 =
    empty slot); ``score`` (C, k) float32 (-inf when empty); ``pos`` (C, k, 2) int32. Slots are
    in rank order: score descending, then sha256, then position.
    """

    k: int
    shas: list[str]
    score: np.ndarray
    photo: np.ndarray
    pos: np.ndarray
    names: dict[str, str] = field(default_factory=dict)  # display names (not part of identity)

    @property
    def units(self) -> int:
        return int(self.score.shape[0])

    @classmethod
    def empty(cls, units: int, k: int) -> TopK:
        return cls(k, [], np.full((units, k), -np.inf, np.float32),
                   np.full((units, k), _EMPTY, np.int32), np.zeros((units, k, 2), np.int32))

    @classmethod
    def from_scores(
        cls, shas: Sequence[str], scores: np.ndarray, positions: np.ndarray, k: int,
        names: dict[str, str] | None = None,
    ) -> TopK:
        """From one batch: ``scores`` (N, C) and ``positions`` (N, C, 2) of photos ``shas``."""
        scores = np.asarray(scores, np.float32)
        n, c = scores.shape
        if len(shas) != n:
            raise ValueError(f"{len(shas)} photos for {n} rows of scores")
        table = sorted(set(shas))
        idx = np.searchsorted(table, list(shas)).astype(np.int32) if n else np.zeros(0, np.int32)
        photo = np.broadcast_to(idx[None, :], (c, n))
        return _select(k, table, scores.T, photo, np.asarray(positions, np.int32).transpose(1, 0, 2),
                       dict(names or {}))

    def merge(self, other: TopK) -> TopK:
        """The top-k of the union of both candidate sets (associative, idempotent)."""
        if self.units != other.units:
            raise ValueError(f"merging top-k of {self.units} and {other.units} units")
        if self.k == other.k:  # a side without candidates: the other is its own top-k already
            # (a map job's first batch and a layer's first absorbed batch: selecting again would
            # cost as much as the first selection, ≈ 20 ms at 1280 units)
            if not self.shas:
                return other
            if not other.shas:
                return self
        k = max(self.k, other.k)
        table = sorted(set(self.shas) | set(other.shas))
        parts = []
        for t in (self, other):
            remap = np.searchsorted(table, t.shas).astype(np.int32) if t.shas else np.zeros(0, np.int32)
            photo = np.where(t.photo >= 0, remap[np.clip(t.photo, 0, None)] if t.shas else _EMPTY,
                             _EMPTY).astype(np.int32)
            parts.append((t.score, photo, t.pos))
        names = {**other.names, **self.names}
        return _select(k, table, np.concatenate([p[0] for p in parts], axis=1),
                       np.concatenate([p[1] for p in parts], axis=1),
                       np.concatenate([p[2] for p in parts], axis=1), names)

    def candidates(self, unit: int) -> list[Candidate]:
        out = []
        for j in range(self.k):
            p = int(self.photo[unit, j])
            if p < 0:
                break
            out.append(Candidate(self.shas[p], (int(self.pos[unit, j, 0]), int(self.pos[unit, j, 1])),
                                 float(self.score[unit, j])))
        return out

    def key(self) -> list[list[tuple[str, int, int, float]]]:
        """Every unit's ranked (sha256, row, column, score): equal keys = equal top-k."""
        return [[(c.image_sha256, *c.position, c.score) for c in self.candidates(u)]
                for u in range(self.units)]

    def to_json(self) -> dict[str, Any]:
        units = []
        for u in range(self.units):
            row = []
            for j in range(self.k):
                p = int(self.photo[u, j])
                if p < 0:
                    break
                row.append([float(self.score[u, j]), p, int(self.pos[u, j, 0]), int(self.pos[u, j, 1])])
            units.append(row)
        names = {s: self.names[s] for s in self.shas if s in self.names}
        return {"k": self.k, "shas": self.shas, "units": units, "names": names}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TopK:
        k, units = int(d["k"]), d["units"]
        t = cls.empty(len(units), k)
        t.shas = list(d["shas"])
        t.names = dict(d.get("names", {}))
        lens = np.array([min(len(row), k) for row in units], np.int64)
        flat = [c for row in units for c in row[:k]]
        if not flat:
            return t
        arr = np.asarray(flat, np.float64)
        u = np.repeat(np.arange(len(units)), lens)
        j = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
        t.score[u, j] = arr[:, 0]
        t.photo[u, j] = arr[:, 1].astype(np.int32)
        t.pos[u, j, 0], t.pos[u, j, 1] = arr[:, 2].astype(np.int32), arr[:, 3].astype(np.int32)
        return t


def _select(
    k: int, table: list[str], score: np.ndarray, photo: np.ndarray, pos: np.ndarray,
    names: dict[str, str],
) -> TopK:
    """Per unit: one candidate per photo (its best), then the best ``k``; the table is pruned."""
    c, m = score.shape
    score = np.where(np.isnan(score), -np.inf, score).astype(np.float32)
    unit = np.broadcast_to(np.arange(c)[:, None], (c, m)).ravel()
    s, p = score.ravel(), photo.ravel().astype(np.int64)
    y, x = pos[..., 0].ravel(), pos[..., 1].ravel()
    ok = p >= 0
    unit, s, p, y, x = unit[ok], s[ok], p[ok], y[ok], x[ok]
    # the best candidate of each (unit, photo): sort by unit, photo, score desc, position
    order = np.lexsort((x, y, -s, p, unit))
    unit, s, p, y, x = unit[order], s[order], p[order], y[order], x[order]
    first = np.ones(len(unit), bool)
    first[1:] = (unit[1:] != unit[:-1]) | (p[1:] != p[:-1])
    unit, s, p, y, x = unit[first], s[first], p[first], y[first], x[first]
    # rank within each unit: score desc, sha (table order), position
    order = np.lexsort((x, y, p, -s, unit))
    unit, s, p, y, x = unit[order], s[order], p[order], y[order], x[order]
    starts = np.searchsorted(unit, np.arange(c))
    rank = np.arange(len(unit)) - starts[unit]
    keep = rank < k
    unit, s, p, y, x, rank = unit[keep], s[keep], p[keep], y[keep], x[keep], rank[keep]
    used = np.unique(p)
    new_table = [table[i] for i in used]
    remap = np.full(len(table), _EMPTY, np.int64)
    remap[used] = np.arange(len(used))
    out = TopK.empty(c, k)
    out.shas = new_table
    out.score[unit, rank] = s
    out.photo[unit, rank] = remap[p]
    out.pos[unit, rank, 0], out.pos[unit, rank, 1] = y, x
    out.names = {sha: names[sha] for sha in new_table if sha in names}
    return out


@dataclass(eq=False)
class UnitStats:
    """Per-unit statistics of the score over the photos seen (sums: add each batch once)."""

    count: int
    total: np.ndarray  # (C,) sum of scores
    total_sq: np.ndarray  # (C,) sum of squared scores
    fired: np.ndarray  # (C,) photos whose score is > 0
    peak: np.ndarray  # (C,) highest score (-inf before any photo)

    @classmethod
    def empty(cls, units: int) -> UnitStats:
        return cls(0, np.zeros(units), np.zeros(units), np.zeros(units, np.int64),
                   np.full(units, -np.inf))

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> UnitStats:
        s = np.asarray(scores, np.float64)
        return cls(int(s.shape[0]), s.sum(0), (s * s).sum(0), (s > 0).sum(0).astype(np.int64),
                   s.max(0) if len(s) else np.full(s.shape[1], -np.inf))

    def add(self, other: UnitStats) -> UnitStats:
        return UnitStats(self.count + other.count, self.total + other.total,
                         self.total_sq + other.total_sq, self.fired + other.fired,
                         np.maximum(self.peak, other.peak))

    def unit(self, u: int) -> dict[str, Any]:
        """Photos seen, mean and standard deviation of the score, peak, fraction that fired."""
        n = self.count
        mean = self.total[u] / n if n else None
        var = max(0.0, self.total_sq[u] / n - mean * mean) if n and mean is not None else None
        return {"photos": n, "mean": mean, "std": None if var is None else math.sqrt(var),
                "peak": float(self.peak[u]) if n else None,
                "fired": float(self.fired[u] / n) if n else None}

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total.tolist(),
                "total_sq": self.total_sq.tolist(), "fired": self.fired.tolist(),
                "peak": [None if not np.isfinite(v) else float(v) for v in self.peak]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UnitStats:
        return cls(int(d["count"]), np.asarray(d["total"], np.float64),
                   np.asarray(d["total_sq"], np.float64), np.asarray(d["fired"], np.int64),
                   np.asarray([-np.inf if v is None else v for v in d["peak"]], np.float64))


# --- in memory: the whole computation on photos at hand -----------------------------------------


def top_examples(
    lm: Any, photos: Iterable[tuple[str, np.ndarray]], layers: Sequence[str], k: int = 9,
    side: int = 224, batch: int = 32, precision: str = "float32",
) -> dict[str, TopK]:
    """The top-k per unit of ``layers`` over ``photos`` ((sha256, model input side×side×3
    uint8) pairs), ``batch`` photos per forward pass, merged batch by batch."""
    from convatlas.shared.images import model_square

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
