"""Overlays people can keep (issue 10, item 2, library part): the book's blend in uint8, at the
original size or capped, encoded as JPEG (default, quality 90), PNG or WebP; a small heatmap.png;
no float64 and a bounded peak while blending."""

from __future__ import annotations

import io
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from convatlas.shared.images.decode import decode_image, overlay_size
from convatlas.shared.images.encode import (
    DEFAULT_QUALITY,
    OUTPUT_FORMATS,
    EncodedImage,
    decode_png_size,
    encode_image,
    output_format,
)
from convatlas.shared.render import (
    HEATMAP_SIDE,
    colorize,
    heatmap_image,
    heatmap_png,
    overlay,
    render_overlay,
)
from convatlas.shared.samples import sample_photos


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    smooth = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth.astype(np.int16) + rng.integers(-4, 5, smooth.shape), 0, 255).astype(np.uint8)


def _heat(seed: int = 1, shape: tuple[int, int] = (7, 7)) -> np.ndarray:
    heat = np.random.default_rng(seed).random(shape).astype(np.float32)
    return heat / heat.max()


def _jet_rgb_resized(heatmap: np.ndarray, w: int, h: int) -> np.ndarray:
    """The colour map as the project always made it (float32 upsample, rounded to levels)."""
    up = cv2.resize(heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    levels = np.uint8(np.clip(up, 0.0, 1.0) * 255.0 + 0.5)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def _old_overlay(image: np.ndarray, heatmap: np.ndarray, intensity: float = 0.4) -> np.ndarray:
    """The previous implementation, verbatim (float32, truncating)."""
    h, w = image.shape[:2]
    colored = _jet_rgb_resized(heatmap, w, h).astype(np.float32)
    return np.clip(colored * intensity + image.astype(np.float32), 0, 255).astype(np.uint8)


def _book(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """Listing 5.44: ``heatmap * 0.4 + img``, stored by cv2.imwrite (rounded, saturated)."""
    h, w = image.shape[:2]
    superimposed = _jet_rgb_resized(heatmap, w, h) * 0.4 + image
    return np.clip(np.rint(superimposed), 0, 255).astype(np.uint8)


# --- the blend -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(300, 451), (1200, 1600), (77, 130), (8, 8)])
def test_blend_is_the_books_formula(size: tuple[int, int]) -> None:
    img, heat = _photo(*size), _heat()
    out = overlay(img, heat)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, _book(img, heat))
    assert np.abs(out.astype(int) - _old_overlay(img, heat)).max() <= 1


def test_blend_on_real_photos_and_saturation() -> None:
    for path in sample_photos():
        img = decode_image(path.read_bytes())
        heat = _heat(seed=len(path.name))
        out = overlay(img, heat)
        assert np.abs(out.astype(int) - _old_overlay(img, heat)).max() <= 1, path.name
    white = np.full((40, 60, 3), 250, np.uint8)
    assert (overlay(white, np.ones((7, 7), np.float32)) >= 250).all()  # clipped, never wrapped


def test_other_intensities_and_odd_maps() -> None:
    img = _photo(90, 120)
    for k in (0.0, 0.25, 1.0, 1.7):
        assert np.abs(overlay(img, _heat(), k).astype(int) - _old_overlay(img, _heat(), k)).max() <= 1
    np.testing.assert_array_equal(overlay(img, _heat(), 0.0), img)
    out_of_range = _heat() * 1.6 - 0.3  # clipped after upsampling, as colorize always did
    for heat in (np.zeros((7, 7)), np.ones((14, 14)), _heat(shape=(10, 7)).astype(np.float64), out_of_range):
        assert np.abs(overlay(img, heat).astype(int) - _old_overlay(img, heat)).max() <= 1
    nan = _heat()
    nan[0, 0] = np.nan
    assert overlay(img, nan).shape == img.shape
    with pytest.raises(ValueError, match="intensity"):
        overlay(img, _heat(), -0.4)
    with pytest.raises(ValueError, match="2-D"):
        overlay(img, np.zeros((7, 7, 3)))
    with pytest.raises(ValueError, match="H×W×3"):
        overlay(img[:, :, 0], _heat())


def test_colorize_is_unchanged() -> None:
    for w, h in [(451, 300), (7, 7), (224, 224), (1, 1)]:
        for heat in (_heat(), _heat() * 1.6 - 0.3):
            np.testing.assert_array_equal(colorize(heat, w, h), _jet_rgb_resized(heat, w, h))


# --- max side ------------------------------------------------------------------------------------


def test_overlay_size() -> None:
    assert overlay_size(4032, 3024, 0) == (4032, 3024)
    assert overlay_size(4032, 3024, 1024) == (1024, 768)
    assert overlay_size(3024, 4032, 1024) == (768, 1024)
    assert overlay_size(1000, 20, 100) == (100, 2)
    assert overlay_size(800, 600, 1024) == (800, 600)  # never enlarged
    assert overlay_size(5000, 1, 10) == (10, 1)


@pytest.mark.parametrize(("h", "w", "cap"), [(300, 451, 200), (451, 300, 200), (300, 451, 0), (300, 451, 999)])
def test_max_side_is_respected_with_aspect_kept(h: int, w: int, cap: int) -> None:
    img, heat = _photo(h, w), _heat()
    out = overlay(img, heat, max_side=cap)
    ow, oh = overlay_size(w, h, cap)
    assert out.shape == (oh, ow, 3)
    if cap and max(h, w) > cap:
        assert max(out.shape[:2]) == cap
        assert abs(out.shape[1] / out.shape[0] - w / h) < 0.01
        small = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(out, _book(small, heat))
    for fmt in OUTPUT_FORMATS:
        enc = render_overlay(img, heat, fmt=fmt, max_side=cap)
        assert decode_image(enc.data).shape == (oh, ow, 3), fmt


# --- encoders ------------------------------------------------------------------------------------


def test_formats_decode_back_with_the_right_size() -> None:
    img, heat = _photo(301, 452), _heat()
    expected = overlay(img, heat)
    kinds = {"jpeg": ("image/jpeg", ".jpg", "JPEG"), "png": ("image/png", ".png", "PNG"), "webp": ("image/webp", ".webp", "WEBP")}
    for fmt, (ctype, ext, pil_format) in kinds.items():
        enc = render_overlay(img, heat, fmt=fmt)
        assert isinstance(enc, EncodedImage) and (enc.content_type, enc.extension) == (ctype, ext)
        data, content_type, extension = enc  # unpacks as a 3-tuple
        assert Image.open(io.BytesIO(data)).format == pil_format
        back = decode_image(data)
        assert back.shape == expected.shape, fmt
        if fmt == "png":
            np.testing.assert_array_equal(back, expected)
        else:
            assert np.abs(back.astype(int) - expected).mean() < 3, fmt
        assert encode_image(expected, fmt).data == data  # the same bytes as encoding overlay()


def test_jpeg_quality_default_is_90() -> None:
    assert DEFAULT_QUALITY == 90
    img = _photo(200, 300)
    assert encode_image(img).data == encode_image(img, "jpeg", 90).data
    sizes = [len(encode_image(img, "jpeg", q).data) for q in (50, 90, 100)]
    assert sizes == sorted(sizes)
    assert encode_image(img, "png", 5).data == encode_image(img, "png").data  # quality ignored


def test_encoder_arguments() -> None:
    img = _photo(20, 30)
    assert output_format("JPG") == "jpeg" and output_format(" webp ") == "webp"
    with pytest.raises(ValueError, match="unsupported image format 'gif'"):
        encode_image(img, "gif")
    for bad in (0, 101, 9.5, True):
        with pytest.raises(ValueError, match="quality"):
            encode_image(img, "jpeg", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        encode_image(img.astype(np.float32))
    with pytest.raises(ValueError, match="webp cannot store a 16384×8"):
        encode_image(np.zeros((8, 16384, 3), np.uint8), "webp")
    grey = encode_image(img[:, :, 0], "jpeg")
    assert decode_image(grey.data).shape == (20, 30, 3)
    bgr = encode_image(img[:, :, ::-1].copy(), "png", channels="bgr")
    np.testing.assert_array_equal(decode_image(bgr.data), img)


def test_heatmap_png_is_small_and_fixed_size() -> None:
    assert HEATMAP_SIDE == 224
    data = heatmap_png(_heat())
    assert decode_png_size(data) == (224, 224)
    np.testing.assert_array_equal(decode_image(data), heatmap_image(_heat()))
    np.testing.assert_array_equal(decode_image(data), colorize(_heat(), 224, 224))
    assert len(data) < 100_000
    assert decode_png_size(heatmap_png(_heat(), 299)) == (299, 299)


# --- memory and dtypes ---------------------------------------------------------------------------


def test_peak_memory_and_no_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blending a 6-MP photo allocates the float32 map (4 B/px) and the uint8 result (3 B/px),
    nothing at full size beyond: the old blend took ≈ 40 B/px, and one full-size float64 array
    alone would be 8 B/px."""
    h, w = 2000, 3000
    img, heat = _photo(h, w), _heat()
    overlay(img, heat)  # warm caches (LUTs)
    big_dtypes: list[np.dtype] = []
    real_empty, real_resize = np.empty, cv2.resize

    def spy_empty(shape, dtype=float, *a, **k):  # noqa: ANN001, ANN202
        out = real_empty(shape, dtype, *a, **k)
        if out.nbytes > h * w:
            big_dtypes.append(out.dtype)
        return out

    def spy_resize(*a, **k):  # noqa: ANN002, ANN003, ANN202
        out = real_resize(*a, **k)
        if out.nbytes > h * w:
            big_dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(np, "empty", spy_empty)
    monkeypatch.setattr(cv2, "resize", spy_resize)
    tracemalloc.start()
    try:
        shape = overlay(img, heat).shape
        blend_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        enc = render_overlay(img, heat, fmt="jpeg")
        render_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shape == img.shape and decode_image(enc.data).shape == img.shape
    assert np.dtype(np.float64) not in big_dtypes and big_dtypes, big_dtypes
    for name, peak in (("overlay", blend_peak), ("render_overlay", render_peak)):
        assert peak <= 7.5 * h * w, f"{name}: peak {peak / (h * w):.2f} bytes a pixel"
