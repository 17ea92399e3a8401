"""Decoding of user-submitted image files into upright RGB arrays, at full or reduced size.

The checks before decoding are in :mod:`.checks`, the conversion of pixel modes, colour and
orientation in :mod:`.pixels`; every public function here raises
:class:`~convatlas.shared.images.checks.ImageDecodeError`, and only that, for a bad file.

Decisions (each has a constant or a paragraph below so it can be found and changed):

* **Formats**: JPEG (including the MPO multi-picture JPEGs many cameras write), PNG, BMP,
  WebP, TIFF, GIF. Pillow is only *allowed* to try these, so an odd file cannot reach a rarely used
  plugin (or Ghostscript, for EPS). The file's content decides the format, never its suffix.
* **Multi-frame files** (animated GIF/WebP/PNG, multi-page TIFF): the first frame only.
* **Truncation**: refused, even a JPEG that only lacks its last bytes. Pillow's global
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off: it would fill the missing part with grey,
  and Grad-CAM would then explain a picture the user never took.
* **Reduced decoding** (:func:`decode_photo`, :func:`decode_for_model`): a model needs 224×224,
  not 12 megapixels. A JPEG is decoded with DCT-domain scaling (libjpeg's 1/2, 1/4, 1/8) to the
  smallest scale that still covers what was asked for; other formats are decoded in full and
  downscaled. Every rule applies unchanged: the pixel limit, minimum size and aspect ratio
  are checked on the header's (original) size, and EXIF, ICC, CMYK and transparency are handled
  by the same code. The original upright size is always reported, since overlays are drawn at
  it by default.
* **Decoder**: plain 8-bit YCbCr or grey JPEGs without an ICC profile whose stream ends in an
  EOI marker (most camera and phone photos) are decoded by OpenCV's libjpeg-turbo, which gives
  the same pixels as Pillow's (checked bit for bit in the tests, full and reduced) without
  Pillow's slow copy out to NumPy (≈ 40-60 ms CPU saved per 12 MP). Everything else, and anything OpenCV
  refuses, goes through Pillow, whose errors and messages are then the ones the user sees.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from convatlas.shared.images.checks import (
    ImageDecodeError,
    bomb_reason,
    check_file_size,
    check_geometry,
    describe_non_image,
    resolve_limit,
    sniff_format,
    sync_pillow_limit,
)
from convatlas.shared.images.pixels import apply_orientation, exif_orientation, to_rgb_array

__all__ = [
    "IMAGE_SUFFIXES",
    "DecodedPhoto",
    "decode_for_model",
    "decode_image",
    "decode_photo",
    "load_image",
    "model_square",
    "overlay_size",
]

#: File suffixes (lowercase, with the dot) that folder scans pick up. Decoding itself sniffs the
#: content, so a PNG named ``.jpg`` still decodes; this set only decides what a scan looks at.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)

#: The Pillow plugins we let identify a file, in the order they are tried.
#: (No "MPO": Pillow's JPEG plugin itself returns an MPO image for multi-picture camera files.)
_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

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
    check_file_size(len(data), limit)
    sync_pillow_limit(limit)
    Image.init()  # registers every plugin; cheap after the first call
    try:
        return Image.open(io.BytesIO(data), formats=_FORMATS)
    except Image.DecompressionBombError as exc:
        raise bomb_reason(exc, limit) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(describe_non_image(data)) from None
    except Exception as exc:
        claimed = sniff_format(data) or "image"
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
            check_geometry(im.width, im.height, limit)  # header only: nothing decoded yet
            stored_w, stored_h = im.size
            arr = None
            scale = 1
            orientation = None
            if fmt in _JPEG_FORMATS:
                # A JPEG's EXIF is parsed with its header: reading it now decodes nothing.
                orientation = exif_orientation(im)
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
                    raise bomb_reason(exc, limit) from None
                except MemoryError:
                    raise ImageDecodeError(
                        f"out of memory decoding a {stored_w}×{stored_h} {fmt}"
                    ) from None
                except Exception as exc:
                    raise ImageDecodeError(
                        f"truncated or corrupt {fmt} ({type(exc).__name__}: {exc})"
                    ) from None
                if scale == 1:
                    check_geometry(im.width, im.height, limit)  # a GIF frame may enlarge it
                # Only after load(): for PNG, getexif() itself loads the image to find a late
                # eXIf chunk, and a decoding error swallowed there would leave it all black.
                if orientation is None:
                    orientation = exif_orientation(im)
                try:
                    arr = to_rgb_array(im)
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
    arr = np.ascontiguousarray(apply_orientation(arr, orientation))
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
    pixel limit, under ``MIN_SIDE`` or beyond ``MAX_ASPECT`` (:mod:`.checks`). Conversion rules
    (first frame here; white background, ICC, 16-bit scaling, EXIF in :mod:`.pixels`) are in the
    module docstrings.
    """
    limit = resolve_limit(max_pixels)
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
    limit = resolve_limit(max_pixels)
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
    limit = resolve_limit(max_pixels)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            check_file_size(size, limit)
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
