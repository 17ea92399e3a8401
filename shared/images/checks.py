"""Safety checks of an image file before any pixel is decoded, and the one error they raise.

Decisions (each has a constant or a paragraph below so it can be found and changed):

* **Pixel limit** (decompression bombs): ``max_pixels`` or ``CONVATLAS_MAX_PIXELS``, checked on
  the size in the header *before* any pixel is decoded, and again after loading (a GIF frame may
  legally enlarge the canvas). Pillow's own global guard, ``Image.MAX_IMAGE_PIXELS``, is raised
  to at least our limit (logged, never lowered) so it cannot refuse an image we accept; it stays
  as a backstop at twice that, and its ``DecompressionBombError`` is reported as "too large".
* **File size**: a file bigger than any image within the pixel limit could be is refused unread.
* **Minimum size**: each side must be at least :data:`MIN_SIDE` (8) pixels. Grad-CAM upsamples
  to 224×224, so a 1×1 or 3-pixel-high image carries nothing to explain; in bulk uploads such
  files are tracking pixels, spacer GIFs and placeholders, so they are refused, not upscaled.
* **Aspect ratio**: at most :data:`MAX_ASPECT` (100:1). Squashing a 10000×100 strip into 224×224
  makes a heatmap of smeared pixels, and the user should hear that rather than get nonsense.
  Ordinary panoramas (up to ~10:1) pass.
* **Not an image**: a file Pillow cannot identify is sniffed (HTML, SVG, PDF, ZIP, HEIC, video,
  text...) so the message says what it most probably is.
"""

from __future__ import annotations

import codecs
import logging
import os
import re

from PIL import Image

log = logging.getLogger(__name__)

__all__ = ["MAX_ASPECT", "MIN_SIDE", "ImageDecodeError"]

#: Smallest accepted width and height, in pixels (see the module docstring).
MIN_SIDE = 8
#: Largest accepted ratio of the long side to the short side (see the module docstring).
MAX_ASPECT = 100

#: Bytes a file may have per allowed pixel (plus a fixed allowance) before it is refused unread:
#: an uncompressed 32-bit float RGBA TIFF needs 16, so a bigger file is not one we would accept.
_BYTES_PER_PIXEL_CAP = 16
_FILE_OVERHEAD_CAP = 64 * 1024 * 1024


class ImageDecodeError(ValueError):
    """A file could not be turned into an RGB image; ``reason`` says why, in plain words.

    ``path`` is set when the error came from ``decode.load_image``. ``str(err)`` is
    ``"<path>: <reason>"`` (or just the reason), ready to show next to the file name.
    """

    def __init__(self, reason: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        super().__init__(reason if self.path is None else f"{self.path}: {reason}")


def _default_max_pixels() -> int:
    from convatlas.shared.config import Settings

    return Settings.from_env().max_pixels


def resolve_limit(max_pixels: int | None) -> int:
    limit = _default_max_pixels() if max_pixels is None else int(max_pixels)
    if limit <= 0:
        raise ValueError(f"max_pixels must be positive, got {limit}")
    return limit


def sync_pillow_limit(limit: int) -> None:
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


def too_large(pixels: int, limit: int, dims: str = "") -> ImageDecodeError:
    size = f"{dims} = {pixels:.3g} pixels" if dims else f"{pixels:.3g} pixels"
    return ImageDecodeError(f"image too large: {size} > limit {limit:.3g} (CONVATLAS_MAX_PIXELS)")


def check_geometry(width: int, height: int, limit: int) -> None:
    """Refuse by header size alone, before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels: {width}×{height}")
    pixels = width * height
    if pixels > limit:
        raise too_large(pixels, limit, f"{width}×{height}")
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


def check_file_size(n_bytes: int, limit: int) -> None:
    cap = limit * _BYTES_PER_PIXEL_CAP + _FILE_OVERHEAD_CAP
    if n_bytes > cap:
        raise ImageDecodeError(
            f"file too large: {n_bytes:,} bytes for an image of at most {limit:.3g} pixels "
            "(CONVATLAS_MAX_PIXELS)"
        )


def sniff_format(data: bytes) -> str | None:
    """The image format a file's magic bytes claim, for messages about files Pillow rejected."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG"):
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


def describe_non_image(data: bytes) -> str:
    """Say what a file Pillow could not identify most probably is."""
    claimed = sniff_format(data)
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


def bomb_reason(exc: Exception, limit: int) -> ImageDecodeError:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(match.group(1)) if match else limit * 2 + 1
    return too_large(pixels, limit)
