"""Any Pillow pixel mode to an upright H×W×3 ``uint8`` RGB array.

Decisions (each has a paragraph below so it can be found and changed):

* **Transparency** (RGBA, LA, palette or grey with a transparent colour): composited over
  **white**. Most transparent uploads are logos, cut-out products and stickers designed for a
  light page; over black, dark line art would vanish.
* **Colour**: an embedded ICC profile (RGB or CMYK) is converted to sRGB with LittleCMS; without
  one (or if it is broken) Pillow's plain conversion is used. CMYK without a profile therefore
  uses the naive formula, which is as good as can be done without one.
* **High bit depth**: 16-bit data is scaled over its full range (``round(v * 255 / 65535)``:
  65535 → 255, 32768 → 128), never clipped and never contrast-stretched, so a dark photo stays
  dark. 32-bit integer data within 0..65535 is treated the same way, other ranges are stretched
  min..max; float data within 0..1 is multiplied by 255, other ranges are stretched min..max,
  and NaN/inf become the minimum.
* **Orientation**: the EXIF orientation tag (1-8) is applied, so the array is upright. A corrupt
  EXIF block is ignored (the pixels are still fine) rather than refusing the photo.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

try:  # LittleCMS ships with Pillow's wheels, but a source build may lack it.
    from PIL import ImageCms
except ImportError:  # pragma: no cover - depends on the Pillow build
    ImageCms = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = ["apply_orientation", "exif_orientation", "to_rgb_array"]

_EXIF_ORIENTATION = 0x0112


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth single-channel data to uint8, by range, never by clipping."""
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        lo = float(arr[finite].min()) if finite.any() else 0.0
        hi = float(arr[finite].max()) if finite.any() else 0.0
        arr = np.where(finite, arr, lo)
        if lo >= 0.0 and hi <= 1.0:
            return np.rint(arr * 255.0).astype(np.uint8)
        if hi > lo:
            return np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        return np.zeros(arr.shape, np.uint8)
    wide = arr.astype(np.int64)
    lo, hi = (int(wide.min()), int(wide.max())) if wide.size else (0, 0)
    if mode.startswith("I;16") or (lo >= 0 and hi <= 65535):
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if hi > lo:
        return ((wide - lo) * 255 // (hi - lo)).astype(np.uint8)
    return np.zeros(arr.shape, np.uint8)


_srgb_profile = None


def _icc_to_srgb(im: Image.Image) -> Image.Image:
    """Convert an RGB/CMYK image with an embedded ICC profile to sRGB; unchanged on any failure."""
    global _srgb_profile
    icc = im.info.get("icc_profile")
    if not icc or ImageCms is None or im.mode not in ("RGB", "CMYK"):
        return im
    try:
        if _srgb_profile is None:
            _srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(im, src, _srgb_profile, outputMode="RGB")
        return out if out is not None else im
    except Exception as exc:  # a broken profile must not cost the user the photo
        log.debug("ignoring unusable ICC profile: %s", exc)
        return im


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any Pillow mode to H×W×3 uint8 RGB (see the module docstring for the rules)."""
    mode = im.mode
    if mode.startswith("I") or mode.startswith("F"):
        gray = _scale_to_uint8(np.array(im), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if has_alpha:
        rgba = np.array(im.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[:, :, 3:4]
        # Composite over white, with integer arithmetic so the result is exact and deterministic.
        out = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return out.astype(np.uint8)
    im = _icc_to_srgb(im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as exc:  # corrupt EXIF: the pixels are still fine, keep them as stored
        log.debug("ignoring unreadable EXIF: %s", exc)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Undo the camera's EXIF orientation so the array is upright (same maps as Pillow's)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1, :]
    if orientation == 5:
        return arr.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return arr[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr
