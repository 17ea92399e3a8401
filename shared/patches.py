"""Dataset-example patches: a unit's receptive field cropped from the photo it fired on.

A :class:`~convatlas.shared.engine.receptive_fields.Geometry` box is in model-input pixels; the
model saw the photo resized to its square input, so the box is scaled back onto the photo and
cropped from it; parts of the field outside the photo are black.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["CROP_SIDE", "crop_region", "mosaic_side", "patch"]

#: Long side of the photo decode that patches are cropped from (a reduced decode for JPEGs).
CROP_SIDE = 768


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
