"""The host's CPU codec limit for photos: what one heatmap job costs the CPU per photo (the
reduced decode for the model, the decode at overlay size, the overlay drawn and encoded as JPEG),
on one core, then on every core at once (one process per core): photos/s the host can feed."""

from __future__ import annotations

import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from common import PartLog, Sizes

MODEL_SIDE = 224


def _codec_fns() -> tuple[str, object]:
    """The project's own decode and overlay functions (what the worker runs)."""
    from convatlas.shared.images.decode import decode_for_model, decode_photo
    from convatlas.shared.render import render_overlay

    heat = np.random.default_rng(0).random((7, 7)).astype(np.float32)

    def one(data: bytes) -> int:
        decode_for_model(data, MODEL_SIDE)
        full = decode_photo(data, overlay_max_side=0)
        image = full.overlay_base  # the upright photo at the overlay's (here: full) size
        enc = render_overlay(image, heat, fmt="jpeg")
        return len(enc[0])

    return "convatlas decode_for_model + decode_photo + render_overlay(jpeg)", one


def _init() -> None:
    import cv2

    cv2.setNumThreads(1)


def _work(files: list[str]) -> int:
    _init()
    _, one = _codec_fns()
    return sum(one(Path(f).read_bytes()) > 0 for f in files)  # type: ignore[operator]


def run(out: Path, sz: Sizes) -> None:
    log = PartLog(out, "codec")
    files = sorted(str(p) for p in (out / "photos").glob("*.jpg"))
    cores = os.cpu_count() or 1
    what, one = _codec_fns()
    _init()
    sample = files[: max(4, min(len(files), 40))]
    one(Path(sample[0]).read_bytes())  # type: ignore[operator]
    t0 = time.perf_counter()
    _work(sample)
    single = (time.perf_counter() - t0) / len(sample)
    log.row(what=what, cores=1, ms_per_photo=single * 1000, photos_per_s=1 / single)
    n = min(len(files), max(cores * 40, 16))
    chunks = [files[i::cores] for i in range(cores)]
    chunks = [c[: max(1, n // cores)] for c in chunks if c]
    with Pool(cores, initializer=_init) as pool:
        pool.map(_work, [c[:1] for c in chunks])  # imports and first calls
        t0 = time.perf_counter()
        done = sum(pool.map(_work, chunks))
        wall = time.perf_counter() - t0
    log.row(what=what, cores=cores, photos=done, seconds=wall, photos_per_s=done / wall,
            single_core_x_cores=cores / single)
