"""Probe: decode, overlay and encode costs per real-size photo (issue 10, items 1-2).

Not a test. Prints one table per photo size (12 MP = 4032×3024, 2 MP = 1600×1200): median wall
and CPU milliseconds over a few repeats, the cases interleaved within each repeat so that the
other agents' load on this 2-core CPU falls on all of them alike. Photos are made as the
pipeline benchmark makes its crops: sample photos upscaled with OpenCV; "camera" adds mild
sensor-like noise (σ = 3) so that the JPEG sizes are those of real phone photos, "smooth" is
the plain upscale (small files, the worst case for output ÷ input).

    .venv/bin/python bench/probes/probe_decode.py [--repeats 5] [--sizes 12mp,2mp]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from convatlas.shared.images import decode as images
from convatlas.shared.images.decode import (
    decode_for_model,
    decode_image,
    decode_photo,
    model_square,
)
from convatlas.shared.images.encode import encode_image, encode_png
from convatlas.shared.render import colorize, heatmap_png, overlay, render_overlay
from convatlas.shared.samples import sample_photos

SIZES = {"12mp": (4032, 3024), "2mp": (1600, 1200)}
SIDE = 224


def old_overlay(image: np.ndarray, heatmap: np.ndarray, intensity: float = 0.4) -> np.ndarray:
    """The overlay as it was before issue 10 (float32 at full size, truncating)."""
    h, w = image.shape[:2]
    colored = colorize(heatmap, w, h).astype(np.float32)
    return np.clip(colored * intensity + image.astype(np.float32), 0, 255).astype(np.uint8)


def pillow_decode(data: bytes) -> np.ndarray:
    """decode_image as it was: Pillow for every JPEG (the OpenCV fast path switched off)."""
    real = images._decode_jpeg_cv2
    images._decode_jpeg_cv2 = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return decode_image(data)
    finally:
        images._decode_jpeg_cv2 = real  # type: ignore[assignment]


def pillow_reduced(data: bytes) -> np.ndarray:
    real = images._decode_jpeg_cv2
    images._decode_jpeg_cv2 = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return decode_for_model(data, SIDE).model_input
    finally:
        images._decode_jpeg_cv2 = real  # type: ignore[assignment]


def make_jpeg(photo: np.ndarray, size: tuple[int, int], noise: float) -> bytes:
    big = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)
    if noise:
        rng = np.random.default_rng(0)
        big = np.clip(big + rng.normal(0, noise, big.shape).astype(np.float32), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def old_pipeline(data: bytes, heat: np.ndarray) -> int:
    """Per photo before issue 10, outside the model: bytes written (overlay.png + heatmap.png)."""
    photo = decode_image_old(data)
    cv2.resize(photo, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    h, w = photo.shape[:2]
    heat_png = encode_png(colorize(heat, w, h))
    over_png = encode_png(old_overlay(photo, heat))
    return len(heat_png) + len(over_png)


decode_image_old = pillow_decode


def new_pipeline(data: bytes, heat: np.ndarray) -> int:
    """Per photo with the defaults now: one decode for both, JPEG-90 overlay at original size,
    224×224 heatmap.png. Returns the bytes written."""
    p = decode_photo(data, model_side=SIDE, overlay_max_side=0)
    p.model_input.astype(np.float32)
    over = render_overlay(p.overlay_base, heat)
    return len(over.data) + len(heatmap_png(heat))


def new_pipeline_split(data: bytes, heat: np.ndarray) -> int:
    """The same in two stages as a pipelined worker may run it: a 1/8 decode for the model
    (loader), then a full decode for the overlay after the model call (writer)."""
    m = decode_for_model(data, SIDE)
    m.model_input.astype(np.float32)
    p = decode_photo(data, overlay_max_side=0)
    over = render_overlay(p.overlay_base, heat)
    return len(over.data) + len(heatmap_png(heat))


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3, out


def peak_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def run(size_name: str, repeats: int, noise: float, label: str) -> None:
    size = SIZES[size_name]
    sources = [decode_image(p.read_bytes()) for p in sample_photos()[:3]]
    datas = [make_jpeg(s, size, noise) for s in sources]
    heat = np.random.default_rng(7).random((7, 7)).astype(np.float32)
    heat /= heat.max()
    full = [decode_image(d) for d in datas]
    ov_new = [overlay(f, heat) for f in full]

    cases: dict[str, Callable[[int], object]] = {
        "decode full, Pillow (before)": lambda i: pillow_decode(datas[i]),
        "decode full, now (OpenCV path)": lambda i: decode_image(datas[i]),
        "decode reduced 1/8-ish, Pillow draft": lambda i: pillow_reduced(datas[i]),
        "decode reduced, now (decode_for_model)": lambda i: decode_for_model(datas[i], SIDE),
        "model input from full: INTER_AREA (before)": lambda i: cv2.resize(
            full[i], (SIDE, SIDE), interpolation=cv2.INTER_AREA
        ),
        "model input from full: model_square": lambda i: model_square(full[i], SIDE),
        "decode_photo(model+overlay@orig), one decode": lambda i: decode_photo(
            datas[i], model_side=SIDE, overlay_max_side=0
        ),
        "decode_photo(model+overlay max 1024)": lambda i: decode_photo(
            datas[i], model_side=SIDE, overlay_max_side=1024
        ),
        "overlay @orig, old float32": lambda i: old_overlay(full[i], heat),
        "overlay @orig, new uint8 LUT": lambda i: overlay(full[i], heat),
        "heatmap.png @orig (before)": lambda i: encode_png(colorize(heat, *full[i].shape[1::-1])),
        "heatmap.png 224 (now)": lambda i: heatmap_png(heat),
        "encode overlay PNG, encode_png (before)": lambda i: encode_png(ov_new[i]),
        "encode overlay PNG, now (libpng fast)": lambda i: encode_image(ov_new[i], "png"),
        "encode overlay JPEG-90": lambda i: encode_image(ov_new[i], "jpeg"),
        "encode overlay WebP-90": lambda i: encode_image(ov_new[i], "webp"),
        "render_overlay JPEG-90 (blend+encode)": lambda i: render_overlay(full[i], heat),
        "TOTAL before (decode, input, 2 PNGs)": lambda i: old_pipeline(datas[i], heat),
        "TOTAL now, one decode": lambda i: new_pipeline(datas[i], heat),
        "TOTAL now, 1/8 + full decode": lambda i: new_pipeline_split(datas[i], heat),
    }
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats):
        i = r % len(datas)
        for name, fn in cases.items():
            w, c, _ = timed(lambda fn=fn, i=i: fn(i))
            wall[name].append(w)
            cpu[name].append(c)

    peaks = {
        "overlay @orig, old float32": peak_mb(lambda: old_overlay(full[0], heat)),
        "overlay @orig, new uint8 LUT": peak_mb(lambda: overlay(full[0], heat)),
        "render_overlay JPEG-90 (blend+encode)": peak_mb(lambda: render_overlay(full[0], heat)),
    }
    in_bytes = statistics.mean(len(d) for d in datas)
    print(f"\n## {size_name} ({size[0]}×{size[1]}), {label}: JPEG q92 inputs, mean {in_bytes / 1e6:.2f} MB")
    print(f"{repeats} repeats, medians; cv2 threads {cv2.getNumThreads()}\n")
    print("| case | wall ms | CPU ms | peak MB (numpy) |\n|---|---:|---:|---:|")
    for name in cases:
        pk = f"{peaks[name]:.0f}" if name in peaks else ""
        print(f"| {name} | {statistics.median(wall[name]):.0f} | {statistics.median(cpu[name]):.0f} | {pk} |")

    old_out = statistics.mean(old_pipeline(d, heat) for d in datas)
    new_out = statistics.mean(new_pipeline(d, heat) for d in datas)
    jpeg = statistics.mean(len(render_overlay(f, heat).data) for f in full)
    png = statistics.mean(len(encode_image(o, "png").data) for o in ov_new)
    webp = statistics.mean(len(encode_image(o, "webp").data) for o in ov_new)
    small = len(heatmap_png(heat))
    print(
        f"\noutput ÷ input: before (overlay.png + heatmap.png, full size) {old_out / in_bytes:.2f}× "
        f"({old_out / 1e6:.1f} MB); now (JPEG-90 overlay + 224 heatmap.png) {new_out / in_bytes:.2f}× "
        f"({new_out / 1e6:.2f} MB)"
    )
    print(
        f"overlay bytes: JPEG-90 {jpeg / 1e6:.2f} MB, PNG (libpng) {png / 1e6:.2f} MB, "
        f"WebP-90 {webp / 1e6:.2f} MB; heatmap.png 224: {small / 1e3:.1f} kB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="12mp,2mp")
    ap.add_argument("--kinds", default="camera,smooth")
    args = ap.parse_args()
    print(f"Pillow {Image.__version__}, OpenCV {cv2.__version__}, NumPy {np.__version__}")
    for size_name in args.sizes.split(","):
        for kind in args.kinds.split(","):
            run(size_name, args.repeats, 3.0 if kind == "camera" else 0.0, kind)


if __name__ == "__main__":
    main()
