"""Pictures: the 8×8 filter grid and the Grad-CAM colour map and overlay.

Overlays are the users' keepsakes from bulk runs of 2-12 MP photos, so they are drawn at the
photo's original size by default (as the book does), encoded as JPEG quality 90 by default
(:func:`render_overlay`), and blended in uint8 with OpenCV: a 12-MP overlay costs ≈ 85 ms CPU and
≈ 87 MB at peak instead of ≈ 400 ms and ≈ 440 MB (bench/probes/probe_decode.py). ``heatmap.png`` is the colour map alone at the
model's input size (:func:`heatmap_png`). Grids, tiles and heatmaps stay PNG (``encode_png``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import cv2
import numpy as np

from convatlas.shared.images.decode import overlay_size
from convatlas.shared.images.encode import EncodedImage, encode_image, encode_png, output_format

__all__ = [
    "GRID",
    "HEATMAP_SIDE",
    "MARGIN",
    "assemble_grid",
    "colorize",
    "grid_size",
    "heatmap_image",
    "heatmap_png",
    "overlay",
    "overlay_size",
    "render_overlay",
    "tile_origin",
]

GRID = 8
MARGIN = 5
#: Side of ``heatmap.png`` (the usual classifier input).
HEATMAP_SIDE = 224
#: Rows per band when painting overlays (a band of a 4032-wide photo stays in L2 cache).
_BAND_ROWS = 64


def grid_size(tile: int = 64, n: int = GRID, margin: int = MARGIN) -> int:
    return n * tile + (n - 1) * margin


def tile_origin(position: int, tile: int = 64, n: int = GRID, margin: int = MARGIN) -> tuple[int, int]:
    """(top, left) pixel of a tile; row-major: position = row·8 + col."""
    row, col = divmod(position, n)
    return row * (tile + margin), col * (tile + margin)


def assemble_grid(
    tiles: Mapping[int, np.ndarray], tile: int = 64, n: int = GRID, margin: int = MARGIN
) -> np.ndarray:
    """Place tiles (position → tile×tile×3 uint8) on black; missing positions stay black."""
    side = grid_size(tile, n, margin)
    canvas = np.zeros((side, side, 3), np.uint8)
    for pos, img in tiles.items():
        if not 0 <= pos < n * n:
            raise ValueError(f"tile position {pos} outside the {n}×{n} grid")
        if img.shape != (tile, tile, 3):
            raise ValueError(f"tile {pos} has shape {img.shape}, expected {(tile, tile, 3)}")
        top, left = tile_origin(pos, tile, n, margin)
        canvas[top : top + tile, left : left + tile] = img
    return canvas


def _float_map(heatmap: np.ndarray) -> np.ndarray:
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {heat.shape}")
    return np.nan_to_num(heat, nan=0.0, posinf=1.0, neginf=0.0)


@functools.lru_cache(maxsize=32)
def _jet_lut(intensity: float, order: str) -> np.ndarray:
    """OpenCV's JET colours × ``intensity``, rounded and saturated: a 256×1×3 uint8 LUT.

    ``img + round(jet * k)`` equals ``round(img + jet * k)`` for integer ``img``, so one LUT
    lookup and one saturating add give the book's ``heatmap * 0.4 + img`` as ``cv2.imwrite``
    stores it (rounded, clipped). (256 entries: the only float64 in this module.)
    """
    jet = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET)
    if order == "rgb":
        jet = jet[:, :, ::-1]
    return np.clip(np.rint(jet.astype(np.float64) * intensity), 0, 255).astype(np.uint8)


def _paint(
    heatmap: np.ndarray,
    width: int,
    height: int,
    lut: np.ndarray,
    image: np.ndarray | None = None,
    bgr_out: bool = False,
) -> np.ndarray:
    """The colour-mapped heatmap at width×height, added to ``image`` (RGB uint8) if given.

    The map is upsampled once in float32 (the only full-size intermediate: 4 bytes a pixel);
    quantising, colour lookup and blending then run in bands of :data:`_BAND_ROWS` rows, in
    cache, into the one uint8 output. The quantisation is :func:`colorize`'s historic one
    (``uint8(clip(up, 0, 1) * 255 + 0.5)``), so the colours match it exactly.
    """
    heat = _float_map(heatmap)
    # Linear interpolation never leaves the range of its samples (but for an ulp, which the
    # truncation below absorbs: 255.50003 → 255), so a map within [0, 1] needs no clipping.
    clip = bool(heat.min() < 0.0 or heat.max() > 1.0)
    up = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    up = up.reshape(height, width)
    out = np.empty((height, width, 3), np.uint8)
    levels = np.empty((min(_BAND_ROWS, height), width), np.uint8)
    for top in range(0, height, _BAND_ROWS):
        band = up[top : top + _BAND_ROWS]
        rows = band.shape[0]
        if clip:
            np.clip(band, 0.0, 1.0, out=band)
        band *= np.float32(255.0)
        band += np.float32(0.5)
        np.copyto(levels[:rows], band, casting="unsafe")  # truncates, as np.uint8() did
        colours = cv2.applyColorMap(levels[:rows], lut)
        dst = out[top : top + rows]
        if image is None:
            dst[...] = colours
        elif bgr_out:
            cv2.cvtColor(image[top : top + rows], cv2.COLOR_RGB2BGR, dst=dst)
            cv2.add(dst, colours, dst=dst)
        else:
            cv2.add(image[top : top + rows], colours, dst=dst)
    return out


def colorize(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """Heatmap in [0,1] → JET colours (RGB uint8) resized to width×height."""
    return _paint(heatmap, width, height, _jet_lut(1.0, "rgb"))


def heatmap_image(heatmap: np.ndarray, side: int = HEATMAP_SIDE) -> np.ndarray:
    """The colour-mapped heatmap alone, side×side RGB uint8 (the model's input square: the map
    covers the photo as the model saw it, squashed to a square)."""
    return colorize(heatmap, side, side)


def heatmap_png(heatmap: np.ndarray, side: int = HEATMAP_SIDE) -> bytes:
    """``heatmap.png``: :func:`heatmap_image` encoded with the deterministic :func:`encode_png`
    (224×224: ≈ 20-40 kB, where a full-size one of a 12-MP photo was ≈ 1 MB)."""
    return encode_png(heatmap_image(heatmap, side))


def _photo_u8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"overlay needs an H×W×3 RGB photo, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img


def _overlay_base(image: np.ndarray, max_side: int) -> np.ndarray:
    img = _photo_u8(image)
    h, w = img.shape[:2]
    ow, oh = overlay_size(w, h, max_side)
    if (ow, oh) != (w, h):
        img = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA)
    return img


def _check_intensity(intensity: float) -> float:
    k = float(intensity)
    if not (k >= 0.0 and np.isfinite(k)):
        raise ValueError(f"intensity must be a finite number ≥ 0, got {intensity!r}")
    return k


def overlay(
    image: np.ndarray, heatmap: np.ndarray, intensity: float = 0.4, *, max_side: int = 0
) -> np.ndarray:
    """The book's ``heatmap * 0.4 + img``, rounded and clipped, as RGB uint8.

    At the photo's own size by default; ``max_side`` > 0 first shrinks the photo (INTER_AREA,
    aspect kept, see :func:`~convatlas.shared.images.decode.overlay_size`) so its long side is at most
    that; a photo already within it is used as is. Computed in uint8 with OpenCV (one LUT and a
    saturating add per band of rows) beside one float32 upsampled map: never float64, and about
    7 bytes a pixel at peak where the old float32 blend took ≈ 36. Equal to the book's result as
    ``cv2.imwrite`` stores it; within 1 grey level of the old truncating blend.
    """
    base = _overlay_base(image, max_side)
    lut = _jet_lut(_check_intensity(intensity), "rgb")
    return _paint(heatmap, base.shape[1], base.shape[0], lut, base)


def render_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    fmt: str = "jpeg",
    quality: int | None = None,
    max_side: int = 0,
    intensity: float = 0.4,
) -> EncodedImage:
    """:func:`overlay` encoded as ``fmt`` (jpeg, png, webp; quality as
    :func:`~convatlas.shared.images.encode.encode_image`), blended straight into the encoder's BGR
    order so no extra full-size copy is made. Returns (data, content_type, extension)."""
    name = output_format(fmt)
    base = _overlay_base(image, max_side)
    lut_order = "rgb" if name == "webp" else "bgr"
    lut = _jet_lut(_check_intensity(intensity), lut_order)
    pixels = _paint(heatmap, base.shape[1], base.shape[0], lut, base, bgr_out=lut_order == "bgr")
    return encode_image(pixels, name, quality, channels=lut_order)
