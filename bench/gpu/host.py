"""The host's CPU codec limit for photos: what one heatmap job costs the CPU per photo (the
reduced decode for the model, the decode at overlay size, the overlay drawn and encoded as JPEG),
on one core, then on every core at once (one process per core): photos/s the host can feed.
Then the two ways out where that limit is below the model's rate: a smaller overlay (1024 px
long side) and torchvision's GPU JPEG decode."""

from __future__ import annotations

import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from common import PartLog, Sizes

MODEL_SIDE = 224


def _codec_fns(max_side: int = 0) -> tuple[str, object]:
    """The project's own decode and overlay functions (what the worker runs), for overlays of
    the photo's size (``max_side`` 0, the default) or capped at ``max_side`` pixels."""
    from convatlas.shared.images.decode import decode_for_model, decode_photo
    from convatlas.shared.render import render_overlay

    heat = np.random.default_rng(0).random((7, 7)).astype(np.float32)

    def one(data: bytes) -> int:
        decode_for_model(data, MODEL_SIDE)
        full = decode_photo(data, overlay_max_side=max_side)
        image = full.overlay_base  # the upright photo at the overlay's size
        enc = render_overlay(image, heat, fmt="jpeg", max_side=max_side)
        return len(enc[0])

    what = "decode_for_model + decode_photo + render_overlay(jpeg)"
    return what + (f", overlay max side {max_side}" if max_side else ", full-size overlay"), one


def _init() -> None:
    import cv2

    cv2.setNumThreads(1)


def _work(args: tuple[list[str], int]) -> int:
    files, max_side = args
    _init()
    _, one = _codec_fns(max_side)
    return sum(one(Path(f).read_bytes()) > 0 for f in files)  # type: ignore[operator]


def gpu_decode(files: list[str], log: PartLog) -> None:
    """torchvision's nvJPEG decode on the GPU (batched), where torch sees a GPU: the option for a
    host whose CPU cannot feed the model (issue 24, part 3). Not the worker's code path."""
    try:
        import torch
        from torchvision.io import decode_jpeg
    except ImportError as exc:
        log.row(what="torchvision decode_jpeg on the GPU", skipped=f"not available: {exc}")
        return
    if not torch.cuda.is_available():
        log.row(what="torchvision decode_jpeg on the GPU", skipped="no CUDA device for torch")
        return
    datas = [torch.frombuffer(bytearray(Path(f).read_bytes()), dtype=torch.uint8) for f in files]
    try:
        for batch in (1, 64):
            chunks = [datas[i:i + batch] for i in range(0, len(datas), batch)]
            decode_jpeg(chunks[0], device="cuda")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = 0
            for c in chunks:
                n += len(decode_jpeg(c, device="cuda"))
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            log.row(what="torchvision decode_jpeg on the GPU (decode only, to GPU memory)",
                    batch=batch, photos=n, seconds=wall, photos_per_s=n / wall)
    except Exception as exc:  # whether nvJPEG works there has not been checked
        log.row(what="torchvision decode_jpeg on the GPU", error=repr(exc)[:300])


def run(out: Path, sz: Sizes) -> None:
    log = PartLog(out, "codec")
    files = sorted(str(p) for p in (out / "photos").glob("*.jpg"))
    cores = os.cpu_count() or 1
    _init()
    n = min(len(files), max(cores * 40, 16))
    for max_side in (0, 1024):  # the job's default, then a smaller overlay for GPU hosts
        what, one = _codec_fns(max_side)
        sample = files[: max(4, min(len(files), 40))]
        one(Path(sample[0]).read_bytes())  # type: ignore[operator]
        t0 = time.perf_counter()
        _work((sample, max_side))
        single = (time.perf_counter() - t0) / len(sample)
        log.row(what=what, cores=1, ms_per_photo=single * 1000, photos_per_s=1 / single)
        chunks = [c[: max(1, n // cores)] for c in (files[i::cores] for i in range(cores)) if c]
        with Pool(cores, initializer=_init) as pool:
            pool.map(_work, [(c[:1], max_side) for c in chunks])  # imports and first calls
            t0 = time.perf_counter()
            done = sum(pool.map(_work, [(c, max_side) for c in chunks]))
            wall = time.perf_counter() - t0
        log.row(what=what, cores=cores, photos=done, seconds=wall, photos_per_s=done / wall,
                single_core_x_cores=cores / single)
    gpu_decode(files[:n], log)
