"""Natural-image magnitude spectra for MaCo (``param.maco``): computed, shipped, resampled, found.

MaCo fixes an image's Fourier magnitude to the mean magnitude of natural images and optimises only
the phase. As in Xplique and Horama the spectrum is that of images in Lucid's *decorrelated*
colour space (the inverse of ``fourier.COLOR_TO_RGB``), one (height, width // 2 + 1) map per
channel. Its overall scale does not matter (MaCo standardises the image after the inverse FFT).

* ``SHIPPED``: computed from the sample photos (``samples/photos``) at ``SPECTRUM_SIDE`` px by
  ``python -m convatlas.shared.engine.param.spectra samples/photos`` (``main`` below);
* ``spectrum_from_folder(dir)``: the same from a user's folder (``--spectrum-from DIR``): the
  result is saved under its sha256 and that hash enters the pattern's result key;
* ``magnitude(spectrum_id, size)``: a spectrum resampled to a tile size, by frequency in cycles
  per pixel (so one spectrum serves every tile size).

A spectrum is named by the sha256 of its ``.npy`` bytes; "" names the shipped one. Workers get a
user's spectrum as a run input (``inputs/<sha256>``, uploaded with the plan) and ``remember`` it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

from convatlas.shared.engine.param.fourier import COLOR_TO_RGB

__all__ = ["SHIPPED", "SPECTRUM_SIDE", "is_spectrum_id", "magnitude", "remember", "resolve_spectrum_from",
           "shipped_id", "spectrum_bytes", "spectrum_from_folder", "spectrum_from_images", "spectrum_id", "spectrum_path"]

SPECTRUM_SIDE = 128
SHIPPED = Path(__file__).with_name("photos_spectrum.npy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_KNOWN: dict[str, np.ndarray] = {}  # sha256 → spectrum, this process


def spectrum_from_images(images: list[np.ndarray], side: int = SPECTRUM_SIDE) -> np.ndarray:
    """The mean |rfft2| of ``images`` (each ``side``×``side``×3 uint8 RGB) in the decorrelated
    colour space: (3, side, side // 2 + 1) float32."""
    if not images:
        raise ValueError("no images to compute a spectrum from")
    to_decorrelated = np.linalg.inv(COLOR_TO_RGB.astype(np.float64))
    total = np.zeros((3, side, side // 2 + 1))
    for img in images:
        if img.shape != (side, side, 3):
            raise ValueError(f"images must be {side}×{side}×3, got {img.shape}")
        t = (img.astype(np.float64) / 255.0) @ to_decorrelated
        total += np.abs(np.fft.rfft2(t.transpose(2, 0, 1)))
    return (total / len(images)).astype(np.float32)


def spectrum_from_folder(folder: Path | str, side: int = SPECTRUM_SIDE) -> np.ndarray:
    """``spectrum_from_images`` of every image under ``folder`` (recursively), each decoded to
    its centred ``side``×``side`` square (the models' input square)."""
    from convatlas.shared.images.decode import decode_photo

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for p in paths:
        model_input = decode_photo(p.read_bytes(), model_side=side).model_input
        assert model_input is not None
        images.append(model_input)
    if not images:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) to compute a spectrum from")
    return spectrum_from_images(images, side)


def spectrum_bytes(spectrum: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(spectrum, np.float32), allow_pickle=False)
    return buf.getvalue()


def _cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "convatlas-spectra"


def spectrum_path(sha: str) -> Path:
    """Where this machine keeps a computed spectrum (the run input's file)."""
    return SHIPPED if sha in ("", shipped_id()) else _cache_dir() / f"{sha}.npy"


def remember(data: bytes) -> str:
    """Keep a spectrum's ``.npy`` bytes in this process (and on disk); returns its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    if sha not in _KNOWN:
        arr = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
        if arr.ndim != 3 or arr.shape[0] != 3 or arr.shape[2] != arr.shape[1] // 2 + 1:
            raise ValueError(f"a spectrum is (3, side, side // 2 + 1), got {arr.shape}")
        _KNOWN[sha] = arr
        path = spectrum_path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return sha


@functools.cache
def shipped_id() -> str:
    """The sha256 of the shipped spectrum's ``.npy`` bytes."""
    return hashlib.sha256(SHIPPED.read_bytes()).hexdigest()


def spectrum_id(spectrum_from: str) -> str:
    """The sha256 naming a spectrum: its own, or the shipped one's for ""."""
    return spectrum_from or shipped_id()


def is_spectrum_id(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def resolve_spectrum_from(value: str) -> str:
    """``--spectrum-from``: "" (the shipped spectrum), a sha256 this machine knows, or a folder
    of photos (its spectrum is computed and kept, and its sha256 returned)."""
    if not value:
        return ""
    if is_spectrum_id(value):
        path = spectrum_path(value)
        if value not in _KNOWN and not path.is_file():
            raise ValueError(f"--spectrum-from: no spectrum {value} on this machine; give a folder of photos")
        if value not in _KNOWN:
            remember(path.read_bytes())
        return value
    if not Path(value).is_dir():
        raise ValueError(f"--spectrum-from must be a folder of photos, got {value!r}")
    return remember(spectrum_bytes(spectrum_from_folder(value)))


def _load(spectrum_from: str) -> np.ndarray:
    sha = spectrum_id(spectrum_from)
    if sha not in _KNOWN:
        path = spectrum_path(sha)
        if not path.is_file():
            raise ValueError(f"spectrum {sha} is not known here (a run input not yet fetched?)")
        remember(path.read_bytes())
    return _KNOWN[sha]


def _interp_axis(values: np.ndarray, src: np.ndarray, dst: np.ndarray, axis: int) -> np.ndarray:
    order = np.argsort(src)
    moved = np.moveaxis(values, axis, -1)[..., order]
    flat = moved.reshape(-1, moved.shape[-1])
    out = np.stack([np.interp(dst, src[order], row) for row in flat])
    return np.moveaxis(out.reshape(*moved.shape[:-1], len(dst)), -1, axis)


def magnitude(spectrum_from: str, size: int) -> np.ndarray:
    """The spectrum resampled to a ``size``×``size`` tile, (3, size, size // 2 + 1) float32:
    linear in frequency (cycles per pixel) along each axis. Symmetric where a real image's
    spectrum must be (the columns of frequency 0 and, for even sizes, 1/2)."""
    spec = _load(spectrum_from).astype(np.float64)
    side = spec.shape[1]
    out = _interp_axis(spec, np.fft.fftfreq(side), np.fft.fftfreq(size), axis=1)
    out = _interp_axis(out, np.fft.rfftfreq(side), np.fft.rfftfreq(size), axis=2)
    return out.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    """``python -m convatlas.shared.engine.param.spectra FOLDER [OUT.npy]``: the spectrum of a
    folder's photos (default output: the shipped ``photos_spectrum.npy``)."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m convatlas.shared.engine.param.spectra FOLDER [OUT.npy]")
    out = Path(args[1]) if len(args) > 1 else SHIPPED
    data = spectrum_bytes(spectrum_from_folder(args[0]))
    out.write_bytes(data)
    print(f"{out}: sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
