"""Encoding of results: byte-stable PNGs for grids, tiles and heatmaps; JPEG, PNG or WebP overlays.

Overlays are written by :func:`encode_image` as JPEG (quality 90 by default, what the book
writes), PNG or WebP; grids, tiles and heatmaps stay on :func:`encode_png`, whose bytes do not
depend on the installed libraries' versions.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from convatlas.shared.images.checks import ImageDecodeError

__all__ = [
    "DEFAULT_QUALITY",
    "OUTPUT_FORMATS",
    "EncodedImage",
    "decode_png_size",
    "encode_image",
    "encode_png",
    "output_extension",
    "output_format",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


# --- overlays: JPEG, PNG or WebP ---------------------------------------------------------------

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
