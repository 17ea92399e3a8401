"""Reduced decoding for the model (issue 10, item 1): the model input stays equivalent.

Small photos give exactly the pixels they always gave; 12-MP JPEGs (the sample photos upscaled
with OpenCV, as users' camera photos are) decoded at 1/8 give the same top-1 class and heatmaps
correlating ≥ 0.99 with a full decode; EXIF orientation, the pixel limit and the reasons for
corrupt files are those of ``decode_image``.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from convatlas.shared.engine.cam_runner import grad_cam, input_size, model_input
from convatlas.shared.images import decode as images
from convatlas.shared.images.checks import ImageDecodeError
from convatlas.shared.images.decode import (
    DecodedPhoto,
    decode_for_model,
    decode_image,
    decode_photo,
    model_square,
)
from convatlas.shared.models.registry import get_model
from convatlas.shared.samples import sample_photos

SIDE = 224


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVATLAS_MAX_PIXELS", raising=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


@pytest.fixture(scope="module")
def effnet():  # noqa: ANN201
    return get_model("efficientnet-lite0")


def _jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def big_jpegs() -> dict[str, bytes]:
    """12-MP JPEGs (4032×3024, or 3024×4032 for a portrait) made from three sample photos."""
    out = {}
    for path in sample_photos()[:3]:
        photo = decode_image(path.read_bytes())
        size = (3024, 4032) if photo.shape[0] > photo.shape[1] else (4032, 3024)
        out[path.stem] = _jpeg(cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC))
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# --- small photos: nothing changes -------------------------------------------------------------


def test_small_photos_give_exactly_the_old_model_input(effnet) -> None:  # noqa: ANN001
    assert input_size(effnet) == SIDE
    for path in sample_photos():
        data = path.read_bytes()
        full = decode_image(data)
        expected = model_input(effnet, full)  # what grad_cam has always fed the network
        for photo in (decode_for_model(data, SIDE), decode_photo(data, model_side=SIDE, overlay_max_side=0)):
            assert photo.scale == 1 and photo.size == (full.shape[1], full.shape[0])
            assert photo.model_input.shape == (SIDE, SIDE, 3) and photo.model_input.dtype == np.uint8
            np.testing.assert_array_equal(photo.model_input.astype(np.float32), expected, err_msg=path.name)
            # grad_cam resizes the square input to itself: the identity
            np.testing.assert_array_equal(model_input(effnet, photo.model_input), expected)


def test_mid_size_photos_are_resized_as_model_input_does() -> None:
    """Below 4 × the side no pre-shrink: model_square is model_input's own resize."""
    rng = np.random.default_rng(0)
    for h, w in [(500, 700), (895, 1200), (224, 300), (100, 60)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        interp = cv2.INTER_AREA if min(h, w) > SIDE else cv2.INTER_LINEAR
        np.testing.assert_array_equal(model_square(img, SIDE), cv2.resize(img, (SIDE, SIDE), interpolation=interp))


def test_pre_shrink_only_on_exact_multiples() -> None:
    assert images._area_prefactor(4032, 3024, SIDE) == 8
    assert images._area_prefactor(1600, 1200, SIDE) == 4
    assert images._area_prefactor(1601, 1200, SIDE) == 1  # odd width: direct INTER_AREA
    assert images._area_prefactor(800, 600, SIDE) == 1  # under 4 × side


# --- 12-MP photos: equivalent --------------------------------------------------------------------


def test_12mp_reduced_decode_agrees_with_full_decode(effnet, big_jpegs) -> None:  # noqa: ANN001
    fulls, reduced, both, capped = [], [], [], []
    for name, data in big_jpegs.items():
        full = decode_image(data)
        fulls.append(full)
        r = decode_for_model(data, SIDE)
        assert r.scale == 8 and r.size == (full.shape[1], full.shape[0]), name
        assert r.overlay_base is None and r.nbytes == SIDE * SIDE * 3
        reduced.append(r.model_input)
        b = decode_photo(data, model_side=SIDE, overlay_max_side=0)  # one full decode for both
        assert b.scale == 1 and b.overlay_base.shape == full.shape
        np.testing.assert_array_equal(b.overlay_base, full)
        both.append(b.model_input)
        c = decode_photo(data, model_side=SIDE, overlay_max_side=1024)
        assert c.scale == 2 and max(c.overlay_base.shape[:2]) == 1024
        capped.append(c.model_input)
    ref = grad_cam(effnet, fulls)
    for variant in (reduced, both, capped):
        for name, r, cam in zip(big_jpegs, ref, grad_cam(effnet, variant), strict=True):
            assert cam.class_index == r.class_index, (name, cam.top[0].label, r.top[0].label)
            assert _corr(cam.heatmap, r.heatmap) >= 0.99, name


def test_12mp_model_input_pixels_are_close(effnet, big_jpegs) -> None:  # noqa: ANN001
    data = big_jpegs["chelsea"]
    full = model_input(effnet, decode_image(data))
    reduced = decode_for_model(data, SIDE).model_input.astype(np.float32)
    assert np.abs(full - reduced).mean() < 1.0 and np.abs(full - reduced).max() <= 16


def test_2mp_uses_quarter_scale() -> None:
    photo = decode_image(sample_photos()[1].read_bytes())
    data = _jpeg(cv2.resize(photo, (1600, 1200), interpolation=cv2.INTER_CUBIC))
    r = decode_for_model(data, SIDE)
    assert r.scale == 4 and r.size == (1600, 1200)
    full = cv2.resize(decode_image(data), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    assert np.abs(full.astype(int) - r.model_input).mean() < 1.5  # DCT-domain scaling: ≈ 1.1


def test_other_formats_are_decoded_in_full_then_downscaled() -> None:
    photo = decode_image(sample_photos()[0].read_bytes())
    big = cv2.resize(photo, (1800, 1200), interpolation=cv2.INTER_CUBIC)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG", compress_level=1)
    r = decode_photo(buf.getvalue(), model_side=SIDE, overlay_max_side=600)
    assert r.format == "PNG" and r.scale == 1 and r.size == (1800, 1200)
    np.testing.assert_array_equal(r.model_input, model_square(big, SIDE))
    np.testing.assert_array_equal(r.overlay_base, cv2.resize(big, (600, 400), interpolation=cv2.INTER_AREA))


# --- the rules of decode_image hold on the reduced path -------------------------------------------


def _marked(h: int, w: int) -> np.ndarray:
    """Landscape grey picture: red top-left, blue bottom-left, green top-right."""
    arr = np.full((h, w, 3), 128, np.uint8)
    q = h // 4
    arr[:q, :q] = (255, 0, 0)
    arr[-q:, :q] = (0, 0, 255)
    arr[:q, -q:] = (0, 255, 0)
    return arr


def _with_orientation(arr: np.ndarray, orientation: int, icc: bool = False) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw: dict = {"exif": exif, "quality": 92}
    if icc:
        from PIL import ImageCms

        kw["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("pillow_only", [False, True], ids=["opencv", "pillow-draft"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured_when_reduced(
    monkeypatch: pytest.MonkeyPatch, orientation: int, pillow_only: bool
) -> None:
    if pillow_only:
        monkeypatch.setattr(images, "_decode_jpeg_cv2", lambda *a, **k: None)
    data = _with_orientation(_marked(1000, 2000), orientation)
    full = decode_image(data)  # upright, as tested in test_images.py
    upright = (full.shape[1], full.shape[0])
    r = decode_photo(data, model_side=SIDE, overlay_max_side=500)
    assert r.scale == 4 and r.size == upright
    assert r.overlay_base.shape[:2] == (full.shape[0] // 4, full.shape[1] // 4)
    expected = cv2.resize(full, (upright[0] // 4, upright[1] // 4), interpolation=cv2.INTER_AREA)
    assert np.abs(expected.astype(int) - r.overlay_base).mean() < 2.0
    assert np.abs(model_square(full, SIDE).astype(int) - r.model_input).mean() < 2.0


def test_icc_jpeg_is_reduced_through_pillow_with_its_profile_applied() -> None:
    data = _with_orientation(_marked(1000, 2000), 6, icc=True)
    full = decode_image(data)
    r = decode_for_model(data, SIDE)
    assert r.scale == 4 and r.size == (1000, 2000)
    assert np.abs(model_square(full, SIDE).astype(int) - r.model_input).mean() < 2.0


def test_cmyk_jpeg_is_reduced() -> None:
    im = Image.new("CMYK", (1200, 960), (0, 0, 0, 0))
    im.paste((255, 0, 0, 0), (0, 0, 600, 960))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    r = decode_for_model(buf.getvalue(), SIDE)
    assert r.scale == 4 and r.size == (1200, 960)
    np.testing.assert_allclose(r.model_input[100, 40], (0, 255, 255), atol=8)
    np.testing.assert_allclose(r.model_input[100, 200], (255, 255, 255), atol=8)


def test_pixel_limit_is_on_the_original_size(big_jpegs) -> None:  # noqa: ANN001
    data = big_jpegs["coffee"]
    with pytest.raises(ImageDecodeError) as info:
        decode_for_model(data, SIDE, max_pixels=10_000_000)
    assert info.value.reason.startswith("image too large: 4032×3024")
    assert decode_for_model(data, SIDE, max_pixels=12_192_768).scale == 8


@pytest.mark.parametrize("pillow_only", [False, True], ids=["opencv", "pillow-draft"])
def test_corrupt_12mp_jpeg_fails_with_a_reason(monkeypatch: pytest.MonkeyPatch, big_jpegs, pillow_only: bool) -> None:  # noqa: ANN001
    if pillow_only:
        monkeypatch.setattr(images, "_decode_jpeg_cv2", lambda *a, **k: None)
    data = big_jpegs["rocket"]
    cases = {
        "truncated": data[: len(data) // 2],
        "no EOI": data[:-2],
        "header cut": data[:300],
        "empty": b"",
    }
    for name, bad in cases.items():
        with pytest.raises(ImageDecodeError) as info:
            decode_for_model(bad, SIDE)
        with pytest.raises(ImageDecodeError) as same:
            decode_image(bad)
        assert info.value.reason == same.value.reason, name
        assert "truncated or corrupt JPEG" in info.value.reason or name == "empty", info.value.reason


def test_decode_photo_arguments() -> None:
    data = sample_photos()[2].read_bytes()
    with pytest.raises(ValueError, match="needs model_side"):
        decode_photo(data)
    with pytest.raises(ValueError, match="positive"):
        decode_for_model(data, 0)
    photo = decode_photo(data, overlay_max_side=320)
    assert isinstance(photo, DecodedPhoto) and photo.model_input is None
    assert photo.overlay_base.shape == (214, 320, 3) and photo.size == (640, 427)
