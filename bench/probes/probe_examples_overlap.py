"""Probe: where the local examples map phase loses against a forward-only pass (issue 15).

Runs the same map jobs (``run_examples_jobs``, 2-MP photos, efficientnet-lite0) several ways,
alternating, in one process, beside the forward-only pass of section 1 of
``bench_examples.py`` on the same photos decoded beforehand:

* ``overlap``  — as shipped: the next job's decodes in 8 threads while this job computes;
* ``serial``   — decode a job, then compute it (nothing beside the model);
* ``nice``     — as ``overlap``, the decode threads at nice 19 (the model's threads win the cores);
* ``cv1``      — as ``overlap`` with OpenCV on one thread.

Then one serial pass split by phase (decode, model, top-k, write), wall and process CPU per
photo, and the ratio the machine allows with every phase overlapped perfectly on its cores:
(cores ÷ CPU seconds a photo) ÷ the forward-only rate.

Usage: ``bench/probes/probe_examples_overlap.py [--photos 640] [--repeats 2]``; prints photos/s per variant.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

LAYERS = "stem_conv,block4a_expand_conv,head_conv"
MODEL = "efficientnet-lite0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default="overlap,serial,nice,cv1")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "convatlas-probe-ex"))
    args = ap.parse_args()

    import cv2
    from bench_examples import make_photos
    from measure import median

    from convatlas.producer.plans.examples import plan_examples
    from convatlas.producer.staging import upload_inputs
    from convatlas.shared.config import Settings
    from convatlas.shared.engine.unit_maxima import channel_maxima
    from convatlas.shared.images.decode import decode_for_model as decode
    from convatlas.shared.jobs import examples_map as ex
    from convatlas.shared.models.registry import get_model
    from convatlas.shared.storage import LocalStorage

    work = Path(args.work)
    photos = make_photos(work / "photos", args.photos)
    lm = get_model(MODEL)
    settings = Settings.from_env()
    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    plan = plan_examples([str(work / "photos")], MODEL, LAYERS, 9, settings, LocalStorage(base), batch=32)
    upload_inputs(plan, LocalStorage(base))
    layers = LAYERS.split(",")

    # forward-only on the same photos, decoded beforehand (section 1's pass)
    x_all = np.stack([decode(p.read_bytes(), 224).model_input for p in photos])
    chunks = [x_all[i : i + 32] for i in range(0, len(x_all), 32)]
    for c in chunks[:2]:
        channel_maxima(lm, layers, c)

    def forward_only() -> float:
        t = time.perf_counter()
        for c in chunks:
            channel_maxima(lm, layers, c)
        return len(x_all) / (time.perf_counter() - t)

    niced: set[int] = set()

    def nice_decode(data: bytes, side: int, **kw):  # noqa: ANN003, ANN202
        tid = threading.get_native_id()
        if tid not in niced:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
            niced.add(tid)
        return decode(data, side, **kw)

    def run(variant: str) -> float:
        storage = fresh_output(base, work / f"out-{variant}")
        ex.decode_for_model = nice_decode if variant == "nice" else decode
        cv2.setNumThreads(1 if variant == "cv1" else -1)
        t = time.perf_counter()
        if variant == "serial":
            for job in plan.jobs:
                got = ex.prepare(job, storage)
                (mapped,) = ex.compute([job], [got])
                ex.write(job, got, mapped, storage, {})
        else:
            ex.run_examples_jobs(list(plan.jobs), storage)
        rate = args.photos / (time.perf_counter() - t)
        niced.clear()
        return rate

    variants = args.variants.split(",")
    rates: dict[str, list[float]] = {v: [] for v in ["forward", *variants]}
    run(variants[0])  # warm: trace every batch shape
    for r in range(args.repeats):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            rates["forward"].append(forward_only())
            rates[v].append(run(v))
            print(f"repeat {r} {v:8s} {rates[v][-1]:7.2f} photos/s  (forward {rates['forward'][-1]:.2f})",
                  flush=True)
    fw = median(rates["forward"])
    for v in variants:
        m = median(rates[v])
        print(f"{v:8s} median {m:7.2f} photos/s = {m / fw:.2f}x forward-only ({fw:.2f})")
    phases(plan, fresh_output(base, work / "out-phases"), ex, fw, args.photos)


def fresh_output(base: Path, out: Path):  # noqa: ANN201
    """An empty results folder holding the uploaded photos of ``base`` (no map done yet)."""
    from convatlas.shared.storage import LocalStorage

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base / "inputs", out / "inputs")
    return LocalStorage(out)


def phases(plan, storage, ex, fw: float, n: int) -> None:  # noqa: ANN001
    """One serial pass, each phase timed (wall, process CPU): nothing else runs meanwhile."""
    maxima = ex.channel_maxima
    wall = {"decode": 0.0, "model": 0.0, "top-k": 0.0, "write": 0.0}
    cpu = dict(wall)

    def timed(name: str, fn, *a):  # noqa: ANN001, ANN002, ANN202
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a)
        finally:
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c

    ex.channel_maxima = lambda *a, **k: timed("model", maxima, *a)
    try:
        for job in plan.jobs:
            got = timed("decode", ex.prepare, job, storage)
            (mapped,) = timed("top-k", ex.compute, [job], [got])
            timed("write", ex.write, job, got, mapped, storage, {})
    finally:
        ex.channel_maxima = maxima
    wall["top-k"] -= wall["model"]
    cpu["top-k"] -= cpu["model"]
    cores = os.cpu_count() or 1
    print("phase     wall ms  CPU ms  (per photo, serial pass)")
    for k in wall:
        print(f"{k:8s} {1000 * wall[k] / n:7.2f} {1000 * cpu[k] / n:7.2f}")
    total = sum(cpu.values()) / n
    print(f"serial {n / sum(wall.values()):.2f} photos/s; all phases perfectly overlapped on {cores} "
          f"cores: {cores / total:.2f} photos/s = {cores / total / fw:.2f}x forward-only")


if __name__ == "__main__":
    main()
