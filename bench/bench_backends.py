#!/usr/bin/env python
"""TensorFlow vs JAX on this CPU, the same engine calls side by side (issue 24's CPU target:
JAX within 1.2× of TensorFlow's time, or the measurement that shows why not).

Each backend runs in a process of its own (Keras picks its backend once per process), one after
the other, never at the same time. Per backend: vgg16-hed filter-pattern pages (book style,
``filter_patterns``) at block1/3/5_conv1 and Grad-CAM of the sample photos on efficientnet-lite0
(``cam_runner.cams``, one batch) with the forward-only rate beside it. Every call is made once to
compile, then timed (median of repeats).

    .venv/bin/python bench/bench_backends.py            # 64 filters × 40 steps, 64 px (the book)
    .venv/bin/python bench/bench_backends.py --quick    # 8 filters × 4 steps, 32 px: a smoke check

Prints a table (seconds, JAX ÷ TensorFlow) and writes the raw JSON (``bench/raw/backends.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from measure import dump_raw, machine_info, median, raw_path, say, table  # noqa: E402

LAYERS = ("block1_conv1", "block3_conv1", "block5_conv1")


def side(quick: bool, sizes: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
    """One backend's figures (this process's backend, from CONVATLAS_BACKEND)."""
    import numpy as np

    from convatlas.shared.backend_select import active_backend
    from convatlas.shared.engine.cam_runner import cams, model_input
    from convatlas.shared.engine.patterns import PatternParams, filter_patterns
    from convatlas.shared.images.decode import load_image
    from convatlas.shared.models.registry import get_model
    from convatlas.shared.samples import sample_photos

    filters, steps, size, repeats = sizes or ((8, 4, 32, 2) if quick else (64, 40, 64, 3))
    rows: dict[str, Any] = {"backend": active_backend()}
    hed = get_model("vgg16-hed")
    params = PatternParams(size=size, steps=steps)
    for layer in LAYERS:
        call = lambda layer=layer: filter_patterns(hed, layer, list(range(filters)), params,  # noqa: E731
                                                   batch_size=filters)
        t0 = time.perf_counter()
        call()
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        rows[layer] = {"first_s": first, "seconds": median(times), "times": times,
                       "filters": filters, "steps": steps, "size": size}
        say(f"{rows['backend']}: {layer} {median(times):.2f} s (first call {first:.1f} s)")
    lite = get_model("efficientnet-lite0")
    photos = [load_image(p) for p in sample_photos()]
    batch = len(photos)
    grad = lambda: cams(lite, photos, batch_size=batch)  # noqa: E731
    grad()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        grad()
        times.append(time.perf_counter() - t0)
    x = np.stack([model_input(lite, p) for p in photos])
    fwd = lambda: lite.model.predict_on_batch(lite.preprocess(x))  # noqa: E731
    fwd()
    ftimes = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fwd()
        ftimes.append(time.perf_counter() - t0)
    rows["gradcam"] = {"photos": batch, "seconds": median(times), "times": times,
                       "photos_per_s": batch / median(times),
                       "forward_seconds": median(ftimes), "forward_photos_per_s": batch / median(ftimes)}
    say(f"{rows['backend']}: Grad-CAM {batch / median(times):.1f} photos/s, "
        f"forward {batch / median(ftimes):.1f} photos/s")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check")
    ap.add_argument("--raw", type=Path, default=None, help="where the raw JSON goes")
    ap.add_argument("--sizes", default="", help="filters,steps,size,repeats (overrides the mode)")
    ap.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        sizes = tuple(int(v) for v in args.sizes.split(",")) if args.sizes else None
        print("RESULT " + json.dumps(side(args.quick, sizes)), flush=True)  # type: ignore[arg-type]
        return 0
    results: dict[str, Any] = {"machine": machine_info(), "quick": args.quick,
                               "sizes": args.sizes}
    for backend in ("tensorflow", "jax"):
        env = {**os.environ, "CONVATLAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
        env.pop("KERAS_BACKEND", None)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side"]
        if args.quick:
            cmd.append("--quick")
        if args.sizes:
            cmd += ["--sizes", args.sizes]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode != 0 or not lines:
            say(f"{backend} side failed:\n{res.stderr[-3000:]}")
            return 1
        results[backend] = json.loads(lines[-1][len("RESULT "):])
    tf, jx = results["tensorflow"], results["jax"]
    rows = [[layer, f"{tf[layer]['seconds']:.2f}", f"{jx[layer]['seconds']:.2f}",
             f"{jx[layer]['seconds'] / tf[layer]['seconds']:.2f}"] for layer in LAYERS]
    rows.append(["Grad-CAM (lite0)", f"{tf['gradcam']['seconds']:.2f}",
                 f"{jx['gradcam']['seconds']:.2f}",
                 f"{jx['gradcam']['seconds'] / tf['gradcam']['seconds']:.2f}"])
    rows.append(["forward (lite0)", f"{tf['gradcam']['forward_seconds']:.3f}",
                 f"{jx['gradcam']['forward_seconds']:.3f}",
                 f"{jx['gradcam']['forward_seconds'] / tf['gradcam']['forward_seconds']:.2f}"])
    print(table(["call", "TensorFlow s", "JAX s", "JAX ÷ TF"], rows))
    path = dump_raw(raw_path("backends", args.quick, args.raw), results)
    say(f"raw figures: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
