"""Receptive-field geometry: which input pixels a unit of a layer sees, from the layer graph.

Used by dataset examples (the patch around a unit's arg-max) and the atlas (each layer's field
size). Pure arithmetic on a Keras functional model's layer graph: no tensor framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Axis", "Geometry", "GeometryError", "geometry_for", "layer_geometry", "min_input_sizes",
           "receptive_fields"]


class GeometryError(ValueError):
    """The layer graph has a layer whose receptive field this module cannot compute."""


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


def receptive_fields(model: Any, input_hw: tuple[int, int] | int, strict: bool = True) -> dict[str, Geometry]:
    """Geometry of every 4-D layer of a Keras functional model, from its layer graph.

    Convolutions (``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D``) and poolings contribute
    their kernel, stride, dilation and padding (``same`` padding puts the odd pixel last, as
    TensorFlow does, which depends on the map's size: hence ``input_hw``); ``ZeroPadding2D``
    and ``Cropping2D`` shift the fields; element-wise layers (activations, normalisation,
    ``Add``, ``Concatenate``…) take the union of their inputs' fields; anything after a global
    pooling or a dense layer (e.g. a squeeze-and-excitation product) sees the whole input.
    Transposed convolutions and resizing are refused (``GeometryError``). Computed sizes are
    checked against the model's own static shapes.

    ``strict=False`` answers "which maps exist at this input size" instead: the static shapes
    are not checked (the input may differ from the model's own), and a layer whose window does
    not fit, or whose inputs differ in size, is left out with everything computed from it.
    """
    h, w = (input_hw, input_hw) if isinstance(input_hw, int) else input_hw
    rows: dict[str, Axis] = {}
    cols: dict[str, Axis] = {}
    flat: set[str] = set()  # layers without a 2-D map (global pooling, dense…)
    gone: set[str] = set()  # strict=False: layers with no map at this input size
    for layer in model.layers:
        kind = type(layer).__name__
        name = layer.name
        parents = _parents(layer)
        if kind == "InputLayer" or not parents:
            rows[name], cols[name] = Axis(h, 1, 1, 0), Axis(w, 1, 1, 0)
            continue
        if not strict:
            if gone.intersection(parents):
                gone.add(name)
                continue
            try:
                r, c = _layer_axes(layer, parents, rows, cols, flat, (h, w), check=False)
            except GeometryError:
                gone.add(name)
                continue
            if r is not None and c is not None:
                rows[name], cols[name] = r, c
            continue
        r, c = _layer_axes(layer, parents, rows, cols, flat, (h, w), check=True)
        if r is not None and c is not None:
            rows[name], cols[name] = r, c
    return {n: Geometry(n, (h, w), rows[n], cols[n]) for n in rows}


def _layer_axes(layer: Any, parents: list[str], rows: dict[str, Axis], cols: dict[str, Axis],
                flat: set[str], hw: tuple[int, int], check: bool) -> tuple[Axis | None, Axis | None]:
    """One layer's row and column axes from its parents' (None, None for a layer without a
    2-D map, which joins ``flat``)."""
    kind, name = type(layer).__name__, layer.name
    h, w = hw
    spatial = _spatial(layer)
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise GeometryError(f"{name}: only channels_last models are supported")
    if spatial is None:
        flat.add(name)
        return None, None
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
    if r.size < 1 or c.size < 1:
        raise GeometryError(f"{name}: no map left ({r.size}×{c.size})")
    for got, want, axis in ((r.size, spatial[0], "rows"), (c.size, spatial[1], "columns")):
        if check and want is not None and got != want:
            raise GeometryError(f"{name}: computed {got} {axis}, the model has {want}")
    return r, c


def min_input_sizes(model: Any, names: Sequence[str], cap: int = 1024) -> dict[str, int]:
    """The smallest square input at which each layer in ``names`` still has a map (valid
    convolutions and poolings shrink maps; Inception's and Xception's deep layers need about
    75 px, VGG's block 5 16 px). Layers still without a map at ``cap`` are left out."""
    want, found = set(names), {}
    for side in range(1, cap + 1):
        for name in want.intersection(receptive_fields(model, side, strict=False)):
            found[name] = side
        want -= set(found)
        if not want:
            break
    return found


def layer_geometry(model: Any, layer: str, input_hw: tuple[int, int] | int) -> Geometry:
    """The receptive-field geometry of one layer (see :func:`receptive_fields`)."""
    fields_ = receptive_fields(model, input_hw)
    if layer not in fields_:
        raise GeometryError(f"{layer}: not a 2-D feature map of {model.name}")
    return fields_[layer]


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
