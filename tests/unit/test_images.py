"""convatlas.shared.images: every awkward real-world input, generated on the fly with Pillow/numpy."""

from __future__ import annotations

import io
import random
import resource
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from convatlas.shared.images import decode as decoding
from convatlas.shared.images.checks import MAX_ASPECT, MIN_SIDE, ImageDecodeError
from convatlas.shared.images.decode import IMAGE_SUFFIXES, decode_image, load_image
from convatlas.shared.images.encode import decode_png_size, encode_png
from convatlas.shared.samples import SAMPLE_NAMES, sample_photos

RED, GREEN, BLUE, WHITE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (128,) * 3


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run with the documented default limit, whatever the developer's environment says."""
    monkeypatch.delenv("CONVATLAS_MAX_PIXELS", raising=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth, JPEG-friendly RGB test picture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def handmade_png(width: int, height: int, idat: bytes, bit_depth: int = 1) -> bytes:
    """A greyscale PNG with any header size and any IDAT payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def bomb_png(width: int, height: int) -> bytes:
    """A genuine, fully valid all-black 1-bit PNG, compressed chunk by chunk (tiny, cheap)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    block = row * 1000
    parts = [comp.compress(block) for _ in range(height // 1000)]
    parts.append(comp.compress(row * (height % 1000)))
    parts.append(comp.flush())
    return handmade_png(width, height, b"".join(parts))


def reason_of(data: bytes, **kw: object) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, **kw)
    return info.value.reason


# --- bad input: clear ImageDecodeError, nothing else ---------------------------------------------


def test_error_type_is_a_value_error_with_reason() -> None:
    err = ImageDecodeError("empty file (0 bytes)", path="a/b.jpg")
    assert isinstance(err, ValueError)
    assert err.reason == "empty file (0 bytes)"
    assert str(err) == "a/b.jpg: empty file (0 bytes)"


def test_zero_byte_file(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.jpg", b"")
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert info.value.reason == "empty file (0 bytes)"
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path: Path) -> None:
    full = encode(Image.fromarray(photo()), "JPEG", quality=90)
    assert load_image(write(tmp_path, "ok.jpg", full)).shape == (48, 64, 3)
    for cut in (len(full) // 2, len(full) - 40, 200, 30):
        path = write(tmp_path, f"cut{cut}.jpg", full[:cut])
        with pytest.raises(ImageDecodeError) as info:
            load_image(path)
        assert "truncated or corrupt JPEG" in info.value.reason, (cut, info.value.reason)


def test_truncated_png() -> None:
    full = encode(Image.fromarray(photo(seed=3)), "PNG")
    assert "truncated or corrupt PNG" in reason_of(full[: len(full) // 2])


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.jpg", b"Shopping list:\n- milk\n- eggs\n" * 20)
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert info.value.reason == "not an image (looks like text)"


def test_html_named_png(tmp_path: Path) -> None:
    page = b"\n  <!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body/></html>\n"
    with pytest.raises(ImageDecodeError) as info:
        load_image(write(tmp_path, "cat.png", page))
    assert info.value.reason == "not an image (looks like HTML)"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x01\x02\x03\xfe\xfd" * 20, "not a supported image"),
        (b"GIF89a\x10", "truncated or corrupt GIF"),
    ],
)
def test_other_non_images(data: bytes, expected: str) -> None:
    assert expected in reason_of(data)


def test_unsupported_format_is_refused_even_if_pillow_reads_it() -> None:
    ico = encode(Image.fromarray(photo(32, 32)), "ICO")
    Image.open(io.BytesIO(ico)).load()  # Pillow itself can read it...
    assert "not a supported image" in reason_of(ico)  # ...but we only allow the listed formats


def test_png_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    data = bomb_png(40_000, 40_000)
    assert len(data) < 1_000_000  # the test itself stays cheap
    assert decode_png_size(data) == (40_000, 40_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(ImageDecodeError) as info:
        load_image(write(tmp_path, "bomb.png", data))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    reason = info.value.reason
    assert reason.startswith("image too large: 1.6e+09 pixels > limit 1e+08"), reason
    assert "CONVATLAS_MAX_PIXELS" in reason
    assert grown_mib < 200  # decoding it would need 1.6 GB


def test_pixel_limit_is_checked_before_decoding() -> None:
    broken = handmade_png(100, 100, b"this is not zlib data", bit_depth=8)
    # Within the limit the broken pixel data is what fails...
    assert "truncated or corrupt PNG" in reason_of(broken, max_pixels=1_000_000)
    # ...over it, the header alone refuses the file: nothing was decoded.
    assert reason_of(broken, max_pixels=5_000) == (
        "image too large: 100×100 = 1e+04 pixels > limit 5e+03 (CONVATLAS_MAX_PIXELS)"
    )


def test_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.fromarray(photo(100, 100)), "PNG")
    assert decode_image(data).shape == (100, 100, 3)
    monkeypatch.setenv("CONVATLAS_MAX_PIXELS", "9999")
    assert "limit 1e+04 (CONVATLAS_MAX_PIXELS)" in reason_of(data)
    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 3)  # explicit wins


def test_pillow_global_limit_cannot_refuse_what_ours_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # e.g. set by some other library
    data = encode(Image.fromarray(photo(64, 64)), "PNG")  # 4096 px > 2 × 1000: Pillow would raise
    assert decode_image(data, max_pixels=50_000).shape == (64, 64, 3)
    assert Image.MAX_IMAGE_PIXELS == 50_000
    decode_image(data, max_pixels=10_000)
    assert Image.MAX_IMAGE_PIXELS == 50_000  # raised to ours, never lowered


def test_pillow_bomb_error_is_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    def bomb(*args: object, **kw: object) -> None:
        raise Image.DecompressionBombError("Image size (300000000 pixels) exceeds limit of ...")

    monkeypatch.setattr(Image, "open", bomb)
    assert reason_of(b"\x89PNG\r\n\x1a\n") == (
        "image too large: 3e+08 pixels > limit 1e+08 (CONVATLAS_MAX_PIXELS)"
    )


def test_one_by_one_is_refused() -> None:
    data = encode(Image.new("RGB", (1, 1), RED), "PNG")
    assert reason_of(data) == "image too small: 1×1 (each side must be at least 8 px)"


def test_smallest_accepted_size() -> None:
    data = encode(Image.new("RGB", (MIN_SIDE, MIN_SIDE), RED), "PNG")
    assert decode_image(data).shape == (MIN_SIDE, MIN_SIDE, 3)
    thinner = encode(Image.new("RGB", (MIN_SIDE, MIN_SIDE - 1), RED), "PNG")
    assert "too small" in reason_of(thinner)


def test_10000_by_3_strip_is_refused() -> None:
    data = encode(Image.new("L", (10_000, 3), 200), "PNG")
    assert reason_of(data) == "image too small: 10000×3 (each side must be at least 8 px)"


def test_extreme_aspect_ratio() -> None:
    edge = encode(Image.new("RGB", (MAX_ASPECT * 10, 10), GREEN), "PNG")  # exactly 100:1
    assert decode_image(edge).shape == (10, MAX_ASPECT * 10, 3)
    strip = encode(Image.new("RGB", (10, MAX_ASPECT * 10 + 10), GREEN), "PNG")  # 101:1
    assert reason_of(strip).startswith("extreme aspect ratio: 10×1010 is 101:1")


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        load_image(tmp_path)  # a directory


def test_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as fh:
        fh.truncate(70 * 1024 * 1024)  # sparse: costs no disk and is never read
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, max_pixels=1)
    assert info.value.reason.startswith("file too large: 73,400,320 bytes")


def test_unexpected_exception_becomes_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(im: Image.Image) -> np.ndarray:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(decoding, "to_rgb_array", boom)
    data = encode(Image.new("RGB", (16, 16), RED), "PNG")
    reason = reason_of(data)
    assert "RuntimeError: kaboom" in reason and "PNG" in reason


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_files_never_raise_anything_else() -> None:
    """Fuzz: random damage to valid files must give an array or ImageDecodeError, nothing else."""
    rng = random.Random(1234)
    pic = Image.fromarray(photo(24, 32, seed=5))
    originals = [
        encode(pic, "JPEG"),
        encode(pic, "PNG"),
        encode(pic.convert("P"), "GIF"),
        encode(pic, "BMP"),
        encode(pic, "TIFF"),
        encode(pic, "WEBP"),
        encode(pic.convert("CMYK"), "JPEG"),
        encode(pic, "TIFF", compression="tiff_deflate"),
    ]
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(400):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(1, len(data))]
        try:
            out = decode_image(bytes(data))
        except ImageDecodeError as exc:
            assert exc.reason
            outcomes["refused"] += 1
        else:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
            outcomes["ok"] += 1
    assert outcomes["ok"] and outcomes["refused"]


# --- conversions ---------------------------------------------------------------------------------


def test_cmyk_jpeg() -> None:
    im = Image.new("CMYK", (32, 16), (0, 0, 0, 0))  # no ink: white
    im.paste((255, 0, 0, 0), (0, 0, 16, 16))  # full cyan on the left
    data = encode(im, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.shape == (16, 32, 3)
    np.testing.assert_allclose(out[8, 4], (0, 255, 255), atol=6)
    np.testing.assert_allclose(out[8, 28], WHITE, atol=6)


def test_icc_profile_srgb_and_broken() -> None:
    pic = photo(16, 16, seed=7)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = decode_image(encode(Image.fromarray(pic), "PNG", icc_profile=srgb))
    np.testing.assert_allclose(out, pic, atol=2)  # sRGB → sRGB: (almost) unchanged
    out = decode_image(encode(Image.fromarray(pic), "PNG", icc_profile=b"garbage profile"))
    np.testing.assert_array_equal(out, pic)  # unusable profile: ignored, photo kept


def test_16_bit_grey_png_is_scaled_not_clipped() -> None:
    values = np.array([0, 257, 32768, 65535], np.uint16)
    arr = np.tile(values, (8, 2))  # 8×8
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode_image(data)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[0, :4, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_16_bit_rgb_png() -> None:
    bgr = np.zeros((8, 8, 3), np.uint16)
    bgr[..., 2], bgr[..., 1], bgr[..., 0] = 65535, 32768, 0  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", bgr)
    assert ok and buf.tobytes()[24] == 16  # bit depth in IHDR
    np.testing.assert_array_equal(decode_image(buf.tobytes())[3, 3], [255, 128, 0])


def test_32_bit_float_tiff() -> None:
    arr = np.tile(np.array([0.0, 0.25, 0.5, 1.0], np.float32), (8, 2))
    out = decode_image(encode(Image.fromarray(arr), "TIFF"))
    np.testing.assert_array_equal(out[0, :4, 1], [0, 64, 128, 255])
    wide = np.tile(np.array([-10.0, 0.0, 10.0, np.nan], np.float32), (8, 2))  # stretched
    np.testing.assert_array_equal(
        decode_image(encode(Image.fromarray(wide), "TIFF"))[0, :4, 0], [0, 128, 255, 0]
    )


def test_grayscale() -> None:
    out = decode_image(encode(Image.new("L", (16, 8), 77), "PNG"))
    assert out.shape == (8, 16, 3)
    assert (out == 77).all()


def test_rgba_is_composited_over_white() -> None:
    arr = np.zeros((8, 24, 4), np.uint8)
    arr[:, :8] = (255, 0, 0, 0)  # fully transparent red → background
    arr[:, 8:16] = (0, 0, 255, 255)  # opaque blue
    arr[:, 16:] = (0, 0, 0, 128)  # half-transparent black → mid grey
    out = decode_image(encode(Image.fromarray(arr, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out[4, 2], WHITE)
    np.testing.assert_array_equal(out[4, 10], BLUE)
    assert set(out[4, 20]) <= {127, 128}


def test_la_is_composited_over_white() -> None:
    im = Image.new("LA", (8, 8), (0, 0))
    out = decode_image(encode(im, "PNG"))
    assert (out == 255).all()


def test_palette_image() -> None:
    im = Image.new("P", (16, 8), 0)
    im.putpalette([*RED, *GREEN, *BLUE] + [0] * (256 - 3) * 3)
    im.paste(2, (8, 0, 16, 8))
    out = decode_image(encode(im, "PNG"))
    np.testing.assert_array_equal(out[4, 2], RED)
    np.testing.assert_array_equal(out[4, 12], BLUE)


def test_palette_transparency_is_white() -> None:
    im = Image.new("P", (16, 8), 0)
    im.putpalette([*RED, *GREEN] + [0] * (256 - 2) * 3)
    im.paste(1, (8, 0, 16, 8))
    data = encode(im, "PNG", transparency=0)
    out = decode_image(data)
    np.testing.assert_array_equal(out[4, 2], WHITE)
    np.testing.assert_array_equal(out[4, 12], GREEN)


def test_one_bit_image() -> None:
    im = Image.new("1", (16, 16), 1)
    im.paste(0, (0, 0, 8, 16))
    out = decode_image(encode(im, "PNG"))
    np.testing.assert_array_equal(out[8, 2], (0, 0, 0))
    np.testing.assert_array_equal(out[8, 12], WHITE)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = decode_image(data)
    assert out.shape == (16, 16, 3)
    assert (out == RED).all()

    reversed_frames = frames[::-1]
    buf = io.BytesIO()
    reversed_frames[0].save(buf, "GIF", save_all=True, append_images=reversed_frames[1:])
    assert (decode_image(buf.getvalue()) == BLUE).all()


def _marked(h: int = 20, w: int = 40) -> np.ndarray:
    """Landscape grey image with a red top-left corner and a blue bottom-left one."""
    arr = np.full((h, w, 3), 128, np.uint8)
    arr[:6, :6] = RED
    arr[-6:, :6] = BLUE
    return arr


def _with_orientation(arr: np.ndarray, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(
        Image.fromarray(arr), fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {})
    )


def _corner(out: np.ndarray, which: str) -> np.ndarray:
    rows = slice(1, 4) if which[0] == "t" else slice(-4, -1)
    cols = slice(1, 4) if which[1] == "l" else slice(-4, -1)
    return out[rows, cols].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize(
    ("orientation", "red_corner", "blue_corner"),
    [
        (6, "tr", "tl"),  # stored rotated: turn 90° clockwise to display
        (8, "bl", "br"),  # turn 90° counter-clockwise to display
        (3, "br", "tr"),  # upside down
    ],
)
def test_exif_rotated_jpeg_is_upright(orientation: int, red_corner: str, blue_corner: str) -> None:
    data = _with_orientation(_marked(), orientation, "JPEG")
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation
    out = decode_image(data)
    assert out.shape == ((40, 20, 3) if orientation in (6, 8) else (20, 40, 3))
    np.testing.assert_allclose(_corner(out, red_corner), RED, atol=25)
    np.testing.assert_allclose(_corner(out, blue_corner), BLUE, atol=25)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pillow(orientation: int) -> None:
    data = _with_orientation(_marked(), orientation, "PNG")
    expected = np.array(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data), expected)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_exif_keeps_the_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    arr = _marked()
    data = encode(Image.fromarray(arr), "PNG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff")
    np.testing.assert_array_equal(decode_image(data), arr)

    def broken_exif(self: Image.Image) -> Image.Exif:
        raise SyntaxError("not a TIFF file")  # what older Pillows raised for some EXIF blocks

    monkeypatch.setattr(Image.Image, "getexif", broken_exif)
    np.testing.assert_array_equal(decode_image(_with_orientation(arr, 6, "PNG")), arr)


@pytest.mark.parametrize(
    ("fmt", "suffix", "kw"),
    [
        ("WEBP", ".webp", {"lossless": True}),
        ("BMP", ".bmp", {}),
        ("TIFF", ".tif", {}),
        ("TIFF", ".tiff", {"compression": "tiff_lzw"}),
        ("PNG", ".png", {}),
    ],
)
def test_lossless_round_trips(tmp_path: Path, fmt: str, suffix: str, kw: dict) -> None:
    arr = photo(30, 50, seed=11)
    path = write(tmp_path, "pic" + suffix, encode(Image.fromarray(arr), fmt, **kw))
    assert suffix in IMAGE_SUFFIXES
    out = load_image(path)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, arr)


def test_lossy_webp_and_jpeg_are_close() -> None:
    arr = photo(32, 48, seed=2)
    for fmt in ("WEBP", "JPEG"):
        out = decode_image(encode(Image.fromarray(arr), fmt, quality=95)).astype(int)
        assert out.shape == arr.shape
        assert np.abs(out - arr).mean() < 6, fmt


def test_content_decides_format_not_suffix(tmp_path: Path) -> None:
    arr = photo(16, 16, seed=4)
    path = write(tmp_path, "really_a_png.jpg", encode(Image.fromarray(arr), "PNG"))
    np.testing.assert_array_equal(load_image(path), arr)


def test_image_suffixes() -> None:
    assert isinstance(IMAGE_SUFFIXES, frozenset)
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"} <= IMAGE_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in IMAGE_SUFFIXES)
    assert ".svg" not in IMAGE_SUFFIXES and ".txt" not in IMAGE_SUFFIXES


# --- PNG helpers ---------------------------------------------------------------------------------


def test_encode_png_is_deterministic_and_lossless() -> None:
    arr = photo(20, 30, seed=9)
    first, second = encode_png(arr), encode_png(arr.copy())
    assert first == second
    assert encode_png(np.asfortranarray(arr)) == first  # memory layout does not matter
    np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(first))), arr)
    assert decode_png_size(first) == (30, 20)
    changed = arr.copy()
    changed[0, 0, 0] ^= 1
    assert encode_png(changed) != first


def test_encode_png_grey() -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    data = encode_png(grey)
    assert decode_png_size(data) == (8, 8)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "L"
    np.testing.assert_array_equal(np.array(decoded), grey)
    np.testing.assert_array_equal(decode_image(data)[..., 1], grey)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4), np.uint8)],
)
def test_encode_png_rejects_bad_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_png(bad)


def test_decode_png_size_rejects_non_png() -> None:
    with pytest.raises(ImageDecodeError, match="not a PNG"):
        decode_png_size(encode(Image.new("RGB", (8, 8)), "JPEG"))
    with pytest.raises(ImageDecodeError):
        decode_png_size(b"")


# --- bundled sample photos -----------------------------------------------------------------------


def test_sample_photos_decode() -> None:
    paths = sample_photos()
    assert [p.name for p in paths] == list(SAMPLE_NAMES)
    assert all(p.is_absolute() and p.parent.name == "photos" for p in paths)
    shapes = {p.name: load_image(p).shape for p in paths}
    assert shapes["chelsea.png"] == (300, 451, 3)
    assert shapes["rocket.jpg"] == (427, 640, 3)
    assert all(min(s[:2]) >= MIN_SIDE for s in shapes.values())


def test_sample_photos_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import convatlas.shared.samples

    monkeypatch.setattr(convatlas.shared.samples, "samples_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="chelsea.png"):
        sample_photos()


# --- the OpenCV fast path for plain JPEGs ------------------------------------------------------


def _jpeg_variants(arr: np.ndarray) -> dict[str, bytes]:
    pic = Image.fromarray(arr)
    out = {
        f"sub{sub}-prog{int(prog)}": encode(pic, "JPEG", quality=88, subsampling=sub, progressive=prog)
        for sub in (0, 1, 2)
        for prog in (False, True)
    }
    out["optimized"] = encode(pic, "JPEG", quality=75, optimize=True)
    out["grey"] = encode(pic.convert("L"), "JPEG", quality=88)
    out["adobe-rgb"] = encode(pic, "JPEG", quality=88, keep_rgb=True)
    out["restarts"] = cv2.imencode(".jpg", arr[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_RST_INTERVAL, 3])[1].tobytes()
    return out


def _pillow_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoding, "_decode_jpeg_cv2", lambda *a, **k: None)


@pytest.mark.parametrize("size", [(48, 64), (61, 83)])
def test_opencv_jpeg_decode_equals_pillows(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    """OpenCV's libjpeg-turbo gives Pillow's pixels bit for bit, full size and DCT-reduced."""
    for name, data in _jpeg_variants(photo(*size, seed=3)).items():
        assert decoding._jpeg_is_complete(data), name
        fast = [decode_image(data)] + [
            decoding._decode(data, 10**8, lambda w, h, s=s: (w // s, h // s))[0] for s in (2, 4, 8)
        ]
        with monkeypatch.context() as m:
            _pillow_only(m)
            slow = [decode_image(data)] + [
                decoding._decode(data, 10**8, lambda w, h, s=s: (w // s, h // s))[0] for s in (2, 4, 8)
            ]
        for a, b in zip(fast, slow, strict=True):
            assert a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_opencv_path_is_used_for_plain_jpegs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = decoding._decode_jpeg_cv2

    def spy(*args: object) -> np.ndarray | None:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(decoding, "_decode_jpeg_cv2", spy)
    pic = Image.fromarray(photo(32, 32))
    decode_image(encode(pic, "JPEG"))
    assert len(calls) == 1
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    decode_image(encode(pic, "JPEG", icc_profile=srgb))  # ICC: Pillow + LittleCMS
    decode_image(encode(pic.convert("CMYK"), "JPEG"))  # CMYK: Pillow
    decode_image(encode(pic, "PNG"))
    assert len(calls) == 1


def test_jpeg_completeness_walk() -> None:
    data = encode(Image.fromarray(photo(40, 40)), "JPEG", progressive=True)
    assert decoding._jpeg_is_complete(data)
    assert decoding._jpeg_is_complete(data + b"trailing garbage after EOI")
    for cut in (3, 20, len(data) // 2, len(data) - 2, len(data) - 1):
        assert not decoding._jpeg_is_complete(data[:cut]), cut
    assert not decoding._jpeg_is_complete(b"not a jpeg")


def test_truncated_jpeg_is_refused_on_every_path() -> None:
    """OpenCV would fill a cut JPEG with grey: the EOI walk leaves it to Pillow, which refuses."""
    data = encode(Image.fromarray(photo(400, 480)), "JPEG", quality=90)
    for cut in (len(data) - 2, len(data) * 2 // 3):
        for decode in (decode_image, lambda d: decoding.decode_for_model(d, 64)):
            with pytest.raises(ImageDecodeError) as info:
                decode(data[:cut])
            assert info.value.reason.startswith("truncated or corrupt JPEG"), info.value.reason
