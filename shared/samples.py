"""The bundled sample photos (``samples/photos/`` at the repository root; see samples/SOURCES.md).

They give demos, benchmarks and tests real photographs with a known, redistributable origin
instead of synthetic noise, and without a download.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLE_NAMES", "samples_dir", "sample_photos"]

#: The sample files, in a fixed order (cat, espresso, rocket, astronaut).
SAMPLE_NAMES: tuple[str, ...] = (
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "astronaut.png",
)


def samples_dir() -> Path:
    """``<repository root>/samples/photos``, found from this file, not the working directory."""
    return Path(__file__).resolve().parent.parent / "samples" / "photos"


def sample_photos() -> list[Path]:
    """Absolute paths of the sample photos, in :data:`SAMPLE_NAMES` order.

    Raises ``FileNotFoundError`` naming every missing file: an installed wheel does not carry
    ``samples/``, so this only works from a checkout of the repository.
    """
    folder = samples_dir()
    paths = [folder / name for name in SAMPLE_NAMES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"sample photos missing from {folder}: {', '.join(missing)} "
            "(samples/ lives at the repository root; run from a git checkout, "
            "see samples/SOURCES.md for where the files come from)"
        )
    return paths
