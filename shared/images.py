"""Decoding of user-submitted image files into RGB arrays, and PNG encoding of results.

Photos arrive in bulk, as folders of real-world files: phone JPEGs with EXIF rotation, CMYK
scans, 16-bit PNGs, animated GIFs, and also empty files, half-downloaded JPEGs, HTML error pages
saved as ``.png`` and decompression bombs. Every one of these must either become an upright
H×W×3 ``uint8`` RGB array or raise :class:`ImageDecodeError` with a sentence a user can act on;
nothing else may escape, so a worker can skip one bad file and carry on with the batch.

Decisions (each has a constant or a paragraph below so it can be found and changed):

* **Formats**: JPEG (including the MPO multi-picture JPEGs many cameras write), PNG, BMP,
  WebP, TIFF, GIF. Pillow is only *allowed* to try these, so an odd file cannot reach a rarely used
  plugin (or Ghostscript, for EPS). The file's content decides the format, never its suffix.
* **Multi-frame files** (animated GIF/WebP/PNG, multi-page TIFF): the first frame only.
* **Pixel limit** (decompression bombs): ``max_pixels`` or ``CONVATLAS_MAX_PIXELS``, checked on
  the size in the header *before* any pixel is decoded, and again after loading (a GIF frame may
  legally enlarge the canvas). Pillow's own global guard, ``Image.MAX_IMAGE_PIXELS``, is raised
  to at least our limit (logged, never lowered) so it cannot refuse an image we accept; it stays
  as a backstop at twice that, and its ``DecompressionBombError`` is reported as "too large".
* **Minimum size**: each side must be at least :data:`MIN_SIDE` (8) pixels. Grad-CAM upsamples
  to 224×224, so a 1×1 or 3-pixel-high image carries nothing to explain; in bulk uploads such
  files are tracking pixels, spacer GIFs and placeholders, so they are refused, not upscaled.
* **Aspect ratio**: at most :data:`MAX_ASPECT` (100:1). Squashing a 10000×100 strip into 224×224
  makes a heatmap of smeared pixels, and the user should hear that rather than get nonsense.
  Ordinary panoramas (up to ~10:1) pass.
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
* **Truncation**: refused, even a JPEG that only lacks its last bytes. Pillow's global
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off: it would fill the missing part with grey,
  and Grad-CAM would then explain a picture the user never took.
* **Orientation**: the EXIF orientation tag (1-8) is applied, so the array is upright. A corrupt
  EXIF block is ignored (the pixels are still fine) rather than refusing the photo.
* **Reduced decoding** (:func:`decode_photo`, :func:`decode_for_model`): a model needs 224×224,
  not 12 megapixels. A JPEG is decoded with DCT-domain scaling (libjpeg's 1/2, 1/4, 1/8) to the
  smallest scale that still covers what was asked for; other formats are decoded in full and
  downscaled. Every rule above applies unchanged: the pixel limit, minimum size and aspect ratio
  are checked on the header's (original) size, and EXIF, ICC, CMYK and transparency are handled
  by the same code. The original upright size is always reported, since overlays are drawn at
  it by default.
* **Decoder**: plain 8-bit YCbCr or grey JPEGs without an ICC profile whose stream ends in an
  EOI marker (most camera and phone photos) are decoded by OpenCV's libjpeg-turbo, which gives
  the same pixels as Pillow's (checked bit for bit in the tests, full and reduced) without
  Pillow's slow copy out to NumPy (≈ 40-60 ms CPU saved per 12 MP). Everything else, and anything OpenCV
  refuses, goes through Pillow, whose errors and messages are then the ones the user sees.
* **Encoding results** (:func:`encode_image`): overlays as JPEG (quality 90 by default, what the
  book writes), PNG or WebP; grids, tiles and heatmaps stay on :func:`encode_png`.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # LittleCMS ships with Pillow's wheels, but a source build may lack it.
    from PIL import ImageCms
except ImportError:  # pragma: no cover - depends on the Pillow build
    ImageCms = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_QUALITY",
    "IMAGE_SUFFIXES",
    "MAX_ASPECT",
    "MIN_SIDE",
    "OUTPUT_FORMATS",
    "DecodedPhoto",
    "EncodedImage",
    "ImageDecodeError",
    "decode_for_model",
    "decode_image",
    "decode_photo",
    "decode_png_size",
    "encode_image",
    "encode_png",
    "load_image",
    "model_square",
    "output_format",
    "overlay_size",
]

#: File suffixes (lowercase, with the dot) that folder scans pick up. Decoding itself sniffs the
#: content, so a PNG named ``.jpg`` still decodes; this set only decides what a scan looks at.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)

#: Smallest accepted width and height, in pixels (see the module docstring).
MIN_SIDE = 8
#: Largest accepted ratio of the long side to the short side (see the module docstring).
MAX_ASPECT = 100

#: The Pillow plugins we let identify a file, in the order they are tried.
#: (No "MPO": Pillow's JPEG plugin itself returns an MPO image for multi-picture camera files.)
_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

#: Bytes a file may have per allowed pixel (plus a fixed allowance) before it is refused unread:
#: an uncompressed 32-bit float RGBA TIFF needs 16, so a bigger file is not one we would accept.
_BYTES_PER_PIXEL_CAP = 16
_FILE_OVERHEAD_CAP = 64 * 1024 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """A file could not be turned into an RGB image; ``reason`` says why, in plain words.

    ``path`` is set when the error came from :func:`load_image`. ``str(err)`` is
    ``"<path>: <reason>"`` (or just the reason), ready to show next to the file name.
    """

    def __init__(self, reason: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        super().__init__(reason if self.path is None else f"{self.path}: {reason}")


def _default_max_pixels() -> int:
    from convatlas.shared.config import Settings

    return Settings.from_env().max_pixels


def _resolve_limit(max_pixels: int | None) -> int:
    limit = _default_max_pixels() if max_pixels is None else int(max_pixels)
    if limit <= 0:
        raise ValueError(f"max_pixels must be positive, got {limit}")
    return limit


def _sync_pillow_limit(limit: int) -> None:
    """Make sure Pillow's global bomb guard never refuses what our limit allows.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and raises above twice that, before we see the size.
    Raising it to our limit (never lowering it: other code in the process may rely on a larger
    one) keeps our header check authoritative and Pillow's as a backstop; ``None`` (disabled by
    someone else) is left alone, since our own check still applies.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < limit:
        log.info(
            "raising PIL.Image.MAX_IMAGE_PIXELS from %d to %d to match CONVATLAS_MAX_PIXELS",
            current,
            limit,
        )
        Image.MAX_IMAGE_PIXELS = limit


def _too_large(pixels: int, limit: int, dims: str = "") -> ImageDecodeError:
    size = f"{dims} = {pixels:.3g} pixels" if dims else f"{pixels:.3g} pixels"
    return ImageDecodeError(f"image too large: {size} > limit {limit:.3g} (CONVATLAS_MAX_PIXELS)")


def _check_geometry(width: int, height: int, limit: int) -> None:
    """Refuse by header size alone, before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels: {width}×{height}")
    pixels = width * height
    if pixels > limit:
        raise _too_large(pixels, limit, f"{width}×{height}")
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(
            f"image too small: {width}×{height} (each side must be at least {MIN_SIDE} px)"
        )
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise ImageDecodeError(
            f"extreme aspect ratio: {width}×{height} is {aspect:.0f}:1 "
            f"(at most {MAX_ASPECT}:1 is accepted; Grad-CAM squashes images to 224×224)"
        )


def _check_file_size(n_bytes: int, limit: int) -> None:
    cap = limit * _BYTES_PER_PIXEL_CAP + _FILE_OVERHEAD_CAP
    if n_bytes > cap:
        raise ImageDecodeError(
            f"file too large: {n_bytes:,} bytes for an image of at most {limit:.3g} pixels "
            "(CONVATLAS_MAX_PIXELS)"
        )


def _sniff_format(data: bytes) -> str | None:
    """The image format a file's magic bytes claim, for messages about files Pillow rejected."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(_PNG_SIGNATURE[:4]):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if data.startswith(b"BM") and data[6:10] == b"\x00\x00\x00\x00":
        return "BMP"
    return None


def _describe_non_image(data: bytes) -> str:
    """Say what a file Pillow could not identify most probably is."""
    claimed = _sniff_format(data)
    if claimed is not None:
        return f"truncated or corrupt {claimed} (header unreadable)"
    head = data[:2048]
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (
        stripped.startswith(b"<") and b"<html" in stripped
    ):
        return "not an image (looks like HTML)"
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in stripped):
        return "SVG vector images are not supported (convert it to PNG first)"
    if stripped.startswith(b"<?xml"):
        return "not an image (looks like XML)"
    if head.startswith(b"%PDF"):
        return "not an image (looks like a PDF document)"
    if head.startswith(b"PK\x03\x04"):
        return "not an image (looks like a ZIP archive)"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC/HEIF images are not supported (convert it to JPEG first)"
        if brand in (b"avif", b"avis"):
            return "AVIF images are not supported (convert it to JPEG or PNG first)"
        return "not an image (looks like an MP4/QuickTime video)"
    if b"\x00" not in head:
        text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(head, final=False)
        if text and sum(c.isprintable() or c in "\t\r\n" for c in text) >= 0.95 * len(text):
            return "not an image (looks like text)"
    return f"not a supported image (unrecognised data starting {head[:8].hex(' ')})"


def _bomb_reason(exc: Exception, limit: int) -> ImageDecodeError:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(match.group(1)) if match else limit * 2 + 1
    return _too_large(pixels, limit)


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


def _to_rgb_array(im: Image.Image) -> np.ndarray:
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


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as exc:  # corrupt EXIF: the pixels are still fine, keep them as stored
        log.debug("ignoring unreadable EXIF: %s", exc)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
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


_JPEG_FORMATS = ("JPEG", "MPO")
#: DCT-domain scales libjpeg offers through Pillow's draft mode and OpenCV's reduced reads.
_DCT_SCALES = (8, 4, 2)
_CV2_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
#: Where the entropy-coded data of a JPEG scan ends: 0xFF followed by anything but a stuffed
#: zero, a restart marker or another fill byte.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

#: A wanted size: called with the photo's upright (width, height), it returns the smallest
#: upright (width, height) the caller needs the decoded pixels to cover, or None for full size.
_Want = Callable[[int, int], "tuple[int, int] | None"]


def _jpeg_is_complete(data: bytes) -> bool:
    """True when the (first) JPEG image in ``data`` is structurally whole: every segment fits
    and its last scan ends in an EOI marker.

    OpenCV, unlike Pillow, fills a truncated JPEG with grey and returns it; only files that pass
    this walk are given to OpenCV. Anything odd (garbage between segments, a missing EOI) returns
    False and is left to Pillow, which then refuses or accepts it exactly as before.
    """
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        return False
    pos = 2
    while pos < n:
        if data[pos] != 0xFF:
            return False
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            return False
        code = data[pos]
        pos += 1
        if code == 0xD9:
            return True
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # standalone markers
            continue
        if code in (0x00, 0xD8) or pos + 2 > n:
            return False
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return False
        pos += length
        if code == 0xDA:  # start of scan: skip its entropy-coded data
            end = _SCAN_END.search(data, pos)
            if end is None:
                return False
            pos = end.start()
    return False


def _dct_scale(stored_w: int, stored_h: int, need: tuple[int, int] | None) -> int:
    """The largest DCT scale (8, 4, 2, else 1) whose decoded size still covers ``need``.

    Pillow's own rule (``JpegImageFile.draft``): the scale must not exceed ``w // need_w`` nor
    ``h // need_h``; the decoded size is then ``ceil(w / scale)`` × ``ceil(h / scale)``.
    """
    if need is None:
        return 1
    need_w, need_h = max(1, need[0]), max(1, need[1])
    most = min(stored_w // need_w, stored_h // need_h)
    return next((s for s in _DCT_SCALES if most >= s), 1)


def _decode_jpeg_cv2(data: bytes, scale: int, stored_w: int, stored_h: int) -> np.ndarray | None:
    """OpenCV's decode of a plain JPEG at 1/``scale``, as stored (no EXIF), RGB; None if refused."""
    flags = _CV2_REDUCED[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except Exception:  # let Pillow give its reason
        return None
    expected = (-(-stored_h // scale), -(-stored_w // scale), 3)
    if bgr is None or bgr.dtype != np.uint8 or bgr.shape != expected:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)


def _open(data: bytes, limit: int) -> Image.Image:
    if len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    _check_file_size(len(data), limit)
    _sync_pillow_limit(limit)
    Image.init()  # registers every plugin; cheap after the first call
    try:
        return Image.open(io.BytesIO(data), formats=_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _bomb_reason(exc, limit) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(_describe_non_image(data)) from None
    except Exception as exc:
        claimed = _sniff_format(data) or "image"
        raise ImageDecodeError(
            f"truncated or corrupt {claimed} header ({type(exc).__name__}: {exc})"
        ) from None


def _decode(data: bytes, limit: int, want: _Want | None) -> tuple[np.ndarray, int, int, str, int]:
    """The one decoder behind every public function.

    Returns ``(pixels, width, height, format, scale)``: upright H×W×3 uint8 RGB pixels, the
    photo's original upright size, Pillow's format name and the DCT scale used (1 = full size;
    only JPEGs are ever reduced).
    """
    im = _open(data, limit)
    fmt = im.format or "image"
    try:
        with im:
            _check_geometry(im.width, im.height, limit)  # header only: nothing decoded yet
            stored_w, stored_h = im.size
            arr = None
            scale = 1
            orientation = None
            if fmt in _JPEG_FORMATS:
                # A JPEG's EXIF is parsed with its header: reading it now decodes nothing.
                orientation = _orientation(im)
                turned = orientation >= 5
                upright = (stored_h, stored_w) if turned else (stored_w, stored_h)
                need = want(*upright) if want is not None else None
                if need is not None and turned:
                    need = (need[1], need[0])
                scale = _dct_scale(stored_w, stored_h, need)
                if (
                    im.mode in ("RGB", "L")
                    and not im.info.get("icc_profile")
                    and getattr(im, "bits", 8) == 8
                    and _jpeg_is_complete(data)
                ):
                    arr = _decode_jpeg_cv2(data, scale, stored_w, stored_h)
                if arr is None and scale > 1:
                    im.draft(None, (stored_w // scale, stored_h // scale))
                    if im.size != (-(-stored_w // scale), -(-stored_h // scale)):
                        scale = 1  # pragma: no cover - Pillow declined the draft
            if arr is None:
                try:
                    im.load()  # first frame only for animated/multi-page files
                except Image.DecompressionBombError as exc:
                    raise _bomb_reason(exc, limit) from None
                except MemoryError:
                    raise ImageDecodeError(
                        f"out of memory decoding a {stored_w}×{stored_h} {fmt}"
                    ) from None
                except Exception as exc:
                    raise ImageDecodeError(
                        f"truncated or corrupt {fmt} ({type(exc).__name__}: {exc})"
                    ) from None
                if scale == 1:
                    _check_geometry(im.width, im.height, limit)  # a GIF frame may enlarge it
                # Only after load(): for PNG, getexif() itself loads the image to find a late
                # eXIf chunk, and a decoding error swallowed there would leave it all black.
                if orientation is None:
                    orientation = _orientation(im)
                try:
                    arr = _to_rgb_array(im)
                except MemoryError:
                    raise ImageDecodeError(
                        f"out of memory converting a {im.width}×{im.height} {fmt}"
                    ) from None
                except Exception as exc:
                    raise ImageDecodeError(
                        f"cannot convert {fmt} pixel mode {im.mode!r} to RGB "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
            width, height = im.width, im.height
            if scale > 1:
                width, height = stored_w, stored_h
    except ImageDecodeError:
        raise
    except Exception as exc:  # anything we did not foresee still gets a reason, not a crash
        raise ImageDecodeError(f"cannot decode {fmt} ({type(exc).__name__}: {exc})") from None

    assert orientation is not None  # set on every path that reaches here
    arr = np.ascontiguousarray(_apply_orientation(arr, orientation))
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:  # pragma: no cover
        raise ImageDecodeError(f"internal error: decoded to {arr.dtype} {arr.shape}")
    if orientation >= 5:
        width, height = height, width
    return arr, width, height, fmt, scale


def decode_image(data: bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file's bytes into an upright H×W×3 ``uint8`` RGB array, at full size.

    ``max_pixels`` defaults to ``Settings.from_env().max_pixels`` (``CONVATLAS_MAX_PIXELS``).
    Raises :class:`ImageDecodeError`, and only that, for anything that is not an acceptable
    image: empty, truncated or corrupt files, non-images, unsupported formats, images over the
    pixel limit, under :data:`MIN_SIDE` or beyond :data:`MAX_ASPECT`. Conversion rules
    (first frame, white background, ICC, 16-bit scaling, EXIF) are in the module docstring.
    """
    limit = _resolve_limit(max_pixels)
    data = bytes(data) if not isinstance(data, bytes) else data
    return _decode(data, limit, None)[0]


# --- decoding for the model and the overlay ---------------------------------------------------


def overlay_size(width: int, height: int, max_side: int = 0) -> tuple[int, int]:
    """(width, height) of an overlay of a ``width``×``height`` photo whose long side is capped at
    ``max_side`` (0 or less = the photo's own size; a photo already within it is kept as is).
    The aspect ratio is kept; the short side is rounded and at least 1."""
    if max_side <= 0 or max(width, height) <= max_side:
        return width, height
    if width >= height:
        return max_side, max(1, round(height * max_side / width))
    return max(1, round(width * max_side / height)), max_side


def _area_prefactor(width: int, height: int, side: int) -> int:
    """An exact power-of-two shrink (4 or more) that OpenCV's fast INTER_AREA path can do before
    the final resize to ``side``; 1 when none applies (small photos, odd sizes)."""
    k = 1
    while min(width, height) >= 2 * k * side:
        k *= 2
    while k >= 4:
        if width % k == 0 and height % k == 0:
            return k
        k //= 2
    return 1


def model_square(image: np.ndarray, side: int) -> np.ndarray:
    """An RGB uint8 photo resized to the model's ``side``×``side`` input, still uint8.

    The same rule as ``convatlas.shared.engine.cam_runner.model_input`` (INTER_AREA when shrinking,
    else INTER_LINEAR), so feeding the result to ``grad_cam`` resizes nothing further. Photos
    whose short side is at least 4 × ``side`` and divisible are first shrunk by an exact power
    of two with OpenCV's integer INTER_AREA path (a 12-MP photo: ≈ 30 ms CPU instead of ≈ 60 ms);
    that equals block averaging, as a reduced JPEG decode does. Smaller photos give exactly
    ``model_input``'s pixels.
    """
    if side <= 0:
        raise ValueError(f"side must be positive, got {side}")
    h, w = image.shape[:2]
    k = _area_prefactor(w, h, side)
    if k > 1:
        image = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_AREA if min(image.shape[:2]) > side else cv2.INTER_LINEAR
    return cv2.resize(image, (side, side), interpolation=interp)


@dataclass(frozen=True, eq=False)
class DecodedPhoto:
    """A photo decoded for what a heatmap job needs, from one decode.

    ``width``/``height`` are always the photo's ORIGINAL upright size (after EXIF orientation),
    whatever was decoded: record these as the image size and size overlays from them.
    ``scale`` is the JPEG DCT scale the pixels were decoded at (1 = full size; 2, 4, 8).
    ``model_input`` is the ``model_side``×``model_side`` RGB uint8 model input, when asked for;
    ``overlay_base`` the upright RGB photo at :func:`overlay_size` (``width``, ``height``,
    ``overlay_max_side``), when asked for (with max side 0 it is the full-size photo).
    """

    width: int
    height: int
    format: str
    scale: int
    model_input: np.ndarray | None = None
    overlay_base: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """The original upright (width, height)."""
        return self.width, self.height

    @property
    def nbytes(self) -> int:
        """Bytes of pixels held (for bounding what is in flight)."""
        return sum(a.nbytes for a in (self.model_input, self.overlay_base) if a is not None)


def decode_photo(
    data: bytes,
    *,
    model_side: int | None = None,
    overlay_max_side: int | None = None,
    max_pixels: int | None = None,
) -> DecodedPhoto:
    """Decode once, at the smallest size that serves the model and/or the overlay.

    ``model_side``: fill ``model_input`` (the model's square input, see :func:`model_square`).
    ``overlay_max_side``: fill ``overlay_base`` at :func:`overlay_size` (0 = original size).
    A JPEG is decoded at the largest DCT reduction whose pixels still cover both (a 12-MP photo
    for a 224 model alone: 1/8); with ``overlay_max_side=0`` it is decoded in full, and the model
    input is derived from that decode rather than from a second one. Other formats are always
    decoded in full and then downscaled. Checks, conversions and errors: :func:`decode_image`.
    """
    if model_side is None and overlay_max_side is None:
        raise ValueError("decode_photo needs model_side, overlay_max_side or both")
    if model_side is not None and model_side <= 0:
        raise ValueError(f"model_side must be positive, got {model_side}")
    limit = _resolve_limit(max_pixels)
    data = bytes(data) if not isinstance(data, bytes) else data

    def want(width: int, height: int) -> tuple[int, int] | None:
        need_w = need_h = model_side or 0
        if overlay_max_side is not None:
            if overlay_max_side <= 0:
                return None
            ow, oh = overlay_size(width, height, overlay_max_side)
            need_w, need_h = max(need_w, ow), max(need_h, oh)
        return need_w, need_h

    arr, width, height, fmt, scale = _decode(data, limit, want)
    base = None
    if overlay_max_side is not None:
        ow, oh = overlay_size(width, height, overlay_max_side)
        base = arr
        if arr.shape[:2] != (oh, ow):
            base = cv2.resize(arr, (ow, oh), interpolation=cv2.INTER_AREA)
    model = model_square(arr, model_side) if model_side is not None else None
    return DecodedPhoto(width, height, fmt, scale, model, base)


def decode_for_model(data: bytes, min_side: int, *, max_pixels: int | None = None) -> DecodedPhoto:
    """Decode only what the model needs: ``model_input`` is ``min_side``×``min_side`` RGB uint8.

    A JPEG is decoded at the smallest DCT scale whose short side is not below ``min_side``
    (then resized as :func:`model_square` does); other formats in full, then downscaled.
    ``width``/``height`` give the original upright size. See :func:`decode_photo`.
    """
    return decode_photo(data, model_side=min_side, max_pixels=max_pixels)


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read and decode one image file; see :func:`decode_image`.

    A file that cannot be read (missing, a directory, no permission) also raises
    :class:`ImageDecodeError`, so a folder scan needs a single ``except`` clause; the error's
    ``path`` names the file. A file bigger than any acceptable image is refused unread.
    """
    limit = _resolve_limit(max_pixels)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            _check_file_size(size, limit)
            data = fh.read()
    except ImageDecodeError as exc:
        raise ImageDecodeError(exc.reason, path=path) from None
    except OSError as exc:
        detail = exc.strerror or type(exc).__name__
        raise ImageDecodeError(f"cannot read file ({detail})", path=path) from None
    try:
        return decode_image(data, max_pixels=limit)
    except ImageDecodeError as exc:
        raise ImageDecodeError(exc.reason, path=path) from None


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an H×W×3 (RGB) or H×W (grey) ``uint8`` array as PNG bytes.

    Written by hand (zlib level 6, filter "none", no timestamp, text or gamma chunks) rather
    than by Pillow, so the same array gives the same bytes whatever Pillow's version or defaults:
    grids and overlays can then be compared and cached byte for byte. (Bytes can still differ
    between zlib builds, e.g. zlib vs zlib-ng; the decoded pixels never do.)
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 data, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        color_type, channels = 0, 1
    elif arr.ndim == 3 and arr.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(f"encode_png needs an H×W×3 or H×W array, got shape {arr.shape}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"encode_png needs a non-empty array, got shape {arr.shape}")
    rows = np.ascontiguousarray(arr).reshape(height, width * channels)
    raw = np.zeros((height, width * channels + 1), np.uint8)  # leading 0 = filter "none"
    raw[:, 1:] = rows
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)),
            _png_chunk(b"IEND", b""),
        )
    )


def decode_png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, without decoding; ImageDecodeError if not a PNG."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ImageDecodeError("not a PNG file (no PNG signature and IHDR chunk)")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- encoding results ----------------------------------------------------------------------------

#: Formats :func:`encode_image` writes (the ``--overlay-format`` choices).
OUTPUT_FORMATS: tuple[str, ...] = ("jpeg", "png", "webp")
#: Quality of lossy formats when none is given (the book's overlay is a JPEG).
DEFAULT_QUALITY = 90
#: libwebp's speed/size trade-off: 0 is ≈ 3× faster than its default 4 for ≈ 10 % more bytes at
#: the same quality (12 MP: ≈ 2 s instead of ≈ 6 s on this CPU); WebP is opt-in, JPEG the default.
_WEBP_METHOD = 0
#: Largest side each format can store.
_MAX_SIDE = {"jpeg": 65_500, "png": 2**31 - 1, "webp": 16_383}
_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


class EncodedImage(NamedTuple):
    """Encoded bytes with what storage and file names need; unpacks as a 3-tuple."""

    data: bytes
    content_type: str  # "image/jpeg", "image/png", "image/webp"
    extension: str  # ".jpg", ".png", ".webp"


def output_format(fmt: str) -> str:
    """The canonical name of an output format ("jpg" → "jpeg"); ValueError if unsupported."""
    name = str(fmt).strip().lower()
    name = {"jpg": "jpeg"}.get(name, name)
    if name not in OUTPUT_FORMATS:
        raise ValueError(f"unsupported image format {fmt!r} (choose from {', '.join(OUTPUT_FORMATS)})")
    return name


def _check_quality(quality: int | None) -> int:
    q = DEFAULT_QUALITY if quality is None else quality
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 1 <= q <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")
    return int(q)


def encode_image(
    rgb: np.ndarray, fmt: str = "jpeg", quality: int | None = None, *, channels: str = "rgb"
) -> EncodedImage:
    """Encode an H×W×3 RGB (or H×W grey) ``uint8`` array as JPEG, PNG or WebP.

    ``channels="bgr"`` says the array is in OpenCV's BGR order (saves a conversion pass for
    callers that already have BGR, such as :func:`convatlas.shared.render.render_overlay`).

    ``quality`` (1-100, default :data:`DEFAULT_QUALITY`) applies to JPEG and WebP and is ignored
    for PNG, which is lossless. JPEG: libjpeg-turbo through OpenCV, 4:2:0 chroma, baseline. PNG:
    OpenCV's libpng at its default fast setting (≈ 3× faster and ≈ 35 % smaller than
    :func:`encode_png` on photos; use ``encode_png`` where bytes must not depend on libpng).
    WebP: libwebp lossy through Pillow. Raises ValueError for other dtypes or shapes, unknown
    formats, bad quality or a side the format cannot store (WebP: 16383 px).
    """
    name = output_format(fmt)
    q = _check_quality(quality) if name != "png" else 0
    if channels not in ("rgb", "bgr"):
        raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    bgr_in = channels == "bgr"
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_image needs uint8 data, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"encode_image needs an H×W×3 or H×W array, got shape {arr.shape}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"encode_image needs a non-empty array, got shape {arr.shape}")
    if max(width, height) > _MAX_SIDE[name]:
        raise ValueError(
            f"{name} cannot store a {width}×{height} image (at most {_MAX_SIDE[name]} px a side); "
            "cap the size or choose another format"
        )
    if name == "webp":
        if bgr_in and arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(arr)).save(
            buf, "WEBP", quality=q, method=_WEBP_METHOD
        )
        data = buf.getvalue()
    else:
        bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 and not bgr_in else arr
        params = [cv2.IMWRITE_JPEG_QUALITY, q] if name == "jpeg" else []
        ok, out = cv2.imencode(".jpg" if name == "jpeg" else ".png", bgr, params)
        if not ok:  # pragma: no cover - OpenCV reports no reason
            raise ValueError(f"OpenCV could not encode a {width}×{height} {name}")
        data = out.tobytes()
    return EncodedImage(data, _CONTENT_TYPES[name], _EXTENSIONS[name])


def output_extension(fmt: str) -> str:
    """The file extension of an output format (``jpeg`` → ``.jpg``)."""
    return _EXTENSIONS[output_format(fmt)]
