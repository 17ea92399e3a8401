#!/usr/bin/env python
"""Benchmark of the heatmaps pipeline on real-size photos: the book's per-image pipeline,
convatlas local (in-process) and convatlas fleet (Redis + SeaweedFS + 1 ``convatlas worker``),
side by side in one run (issue 10, deliverable 4).

    .venv/bin/python bench/bench_pipeline.py                # full run (~10 min on 2 busy cores)
    .venv/bin/python bench/bench_pipeline.py --quick        # 6 + 6 photos, smoke check
    .venv/bin/python bench/bench_pipeline.py --report-only  # the tables again from --raw

It prints two tables and writes the raw measurements (``bench/raw/pipeline.json``, a quick run's
in the temp folder); the reading of the figures is written by hand in ``RESULTS-pipeline.md``.

The fleet is ``convatlas.stack.harness.Fleet`` (the harness of the integration and fault tests)
on its own ``RedisServer`` and ``SeaweedS3Server`` (``convatlas.stack.servers``, free loopback
ports, stopped at the end) with one worker process started as ``Fleet`` starts it
(``convatlas worker``, threads pool), at the user's defaults: 2 × ``CONVATLAS_MAX_BATCH`` = 128
task threads, max batch 64, 50 ms batch window, visibility timeout 3600 s.

Sections:

1. Small photos (200 distinct 128–192 px crops of the sample photos): fleet (``submit_plan``
   → report written by the run's ``finish_run``) vs in-process ``run_local``, A/B order
   alternating over repeats.
2. Real-size photos: 100 JPEGs of 12 MP (4032×3024) and 100 of 2 MP (1600×1200) made from
   ``samples/photos`` (random 4:3 crop, flip, colour gain, brightness, σ = 3 sensor-like noise,
   JPEG quality 90: every file distinct, sizes like phone photos). Per size the photos are cut
   into repeats; in each repeat three sides run on the same photos, the order reversed every
   repeat:
   - ``book``: the book's per-image pipeline, written here: ``cv2.imread`` at full size, resize
     to 224², one ``GradientTape`` call at batch 1 on efficientnet-lite0 (loaded by the
     project's ``get_model``), ``cv2.applyColorMap``, ``heatmap * 0.4 + img`` at full size (float64,
     as the book), ``cv2.imwrite`` JPEG (OpenCV's default quality, 95);
   - ``local``: ``run_local`` (what ``convatlas heatmaps DIR`` runs, batch 16, the defaults:
     JPEG-90 overlay at the original size, 224² ``heatmap.png``, ``cam.npy``, ``record.json``);
   - ``fleet``: ``submit_plan`` (uploads the photos) → report present, 1 worker.
3. 64 photos of 12 MP in flight in one worker (the first 64 of section 2 with ``--class tabby``,
   so their result keys are new): worker peak RSS minus its RSS with the model loaded.

Measured per side and run: wall time; CPU seconds of every process involved (this process, the
worker, SeaweedFS, Redis; ``/proc/<pid>/stat``) and of the whole machine (``/proc/stat``: what
the other processes on the shared cores took meanwhile); model seconds (the job records' /
report's ``pipeline`` sums; the book: its tape call) and the model's CPU seconds where they can
be told apart (local: the process CPU inside its model calls; the book: during its tape calls);
peak RSS (VmHWM, reset before each run
through ``/proc/<pid>/clear_refs``); output and input bytes; for the fleet the worker log's batch
lines (model seconds, the seconds the model thread waited for input). All sides have the model
loaded and traced before timing. Every speed figure is a ratio of sides measured side by side in
this run (the cores are shared with other work).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import (
    Meter,
    cpu_seconds,
    dump_raw,
    machine_info,
    median,
    parse_batches,
    raw_path,
    reset_peak,
    say,
    status_mb,
    table,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PHOTOS = REPO / "samples" / "photos"
PHOTO_CACHE = Path(tempfile.gettempdir()) / "bench-pipeline-photos"
CAM_MODEL = "efficientnet-lite0"
INFLIGHT_CLASS = "tabby"


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    name: str
    small_n: int  # section 1: distinct small photos per repeat
    small_repeats: int
    sizes: tuple[tuple[str, int, int, int], ...]  # section 2: (tag, width, height, photos)
    big_repeats: int  # section 2: the photos of a size are cut into this many repeats
    inflight: int  # section 3: 12-MP photos in flight in one worker


FULL = Config("full", 200, 3, (("12mp", 4032, 3024, 100), ("2mp", 1600, 1200, 100)), 2, 64)
QUICK = Config("quick", 12, 1, (("12mp", 4032, 3024, 6), ("2mp", 1600, 1200, 6)), 2, 6)

# targets (issue 10)
T_LOCAL_VS_BOOK = 6.0
T_FLEET_VS_LOCAL = 0.85
T_CPU_MS = 300.0
T_OUT_IN = 1.5
T_INFLIGHT_MB = 1536.0
T_WAIT = 0.10


# --- inputs ---------------------------------------------------------------------------------------


def _sources() -> list[Any]:
    import cv2

    srcs = [cv2.imread(str(p)) for p in sorted(PHOTOS.iterdir())
            if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    return [s for s in srcs if s is not None]


def make_small_photos(dest: Path, n: int, seed: int) -> Path:
    """``n`` distinct small JPEGs: random crops (and flips, brightness) of the sample photos."""
    import cv2
    import numpy as np

    srcs = _sources()
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = srcs[i % len(srcs)]
        h, w = im.shape[:2]
        c = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        side = int(rng.integers(128, 193))
        crop = cv2.resize(im[y : y + c, x : x + c], (side, side), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop.astype(np.int16) + int(rng.integers(-20, 21)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(dest / f"p{seed:03d}-{i:05d}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return dest


def make_big_photos(dest: Path, n: int, size: tuple[int, int], seed: int) -> Path:
    """``n`` distinct camera-size JPEGs (quality 90) from the sample photos: a random 4:3 crop
    (75–100 % of the largest), a flip, per-channel gain 0.9–1.1, brightness ±12, upscaled with
    INTER_CUBIC to ``size`` (w, h), then σ = 3 Gaussian noise (a sensor's grain, which gives the
    file sizes of phone photos). Kept in a cache folder (named by size, count and seed) between
    runs; every run starts fresh servers and output folders, so a cached photo is new to it."""
    import cv2
    import numpy as np

    dest.mkdir(parents=True, exist_ok=True)
    w, h = size
    todo = [i for i in range(n) if not (dest / f"b{seed:04d}-{i:04d}.jpg").exists()]
    if not todo:
        return dest
    srcs = _sources()
    for i in todo:
        rng = np.random.default_rng([seed, i])
        im = srcs[i % len(srcs)]
        sh, sw = im.shape[:2]
        cw = min(sw, int(sh * 4 / 3))
        f = float(rng.uniform(0.75, 1.0))
        cw = max(16, int(cw * f))
        ch = int(cw * 3 / 4)
        y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
        crop = im[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        big = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_CUBIC)
        gain = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        shift = float(rng.uniform(-12, 12))
        lut = np.stack([np.clip(np.arange(256, dtype=np.float32) * g + shift, 0, 255)
                        for g in gain]).astype(np.uint8)  # one LUT per channel (B, G, R)
        for c in range(3):
            big[..., c] = cv2.LUT(big[..., c], lut[c])
        cv2.setRNGSeed(seed * 100_003 + i)
        noise = np.empty(big.shape, np.int16)
        cv2.randn(noise, (0, 0, 0), (3, 3, 3))  # σ = 3 in every channel
        noisy = cv2.add(big.astype(np.int16), noise, dtype=cv2.CV_16S)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
        tmp = dest / f".b{seed:04d}-{i:04d}.jpg"
        cv2.imwrite(str(tmp), out, [cv2.IMWRITE_JPEG_QUALITY, 90])
        tmp.rename(dest / f"b{seed:04d}-{i:04d}.jpg")
    return dest


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".jpg")


def output_bytes_local(plan: Any, out: Path) -> int:
    return sum((out / k).stat().st_size for j in plan.jobs for k in j.outputs().values())


def input_bytes(plan: Any) -> int:
    return sum(f.size for f in plan.inputs)


# --- the book's per-image pipeline ----------------------------------------------------------------


class Book:
    """DLwP §5.4.3 per image: imread full size → 224² → one GradientTape call at batch 1 →
    applyColorMap at full size → ``heatmap * 0.4 + img`` (float64) → imwrite JPEG."""

    def __init__(self, lm: Any) -> None:
        import keras

        from convatlas.shared.engine.cam_runner import input_size, target_layer

        self.lm = lm
        self.side = input_size(lm)
        self.layer = target_layer(lm, None)
        m = lm.model
        self.grad_model = keras.Model(m.inputs, [m.get_layer(self.layer).output, m.output])

    def one(self, path: Path, out: Path) -> tuple[float, float]:
        """Writes ``out``; returns the model's (wall, CPU) seconds (preprocess + the tape
        call; this process does nothing else meanwhile, so its CPU time is the model's)."""
        import cv2
        import numpy as np
        import tensorflow as tf

        img = cv2.imread(str(path))
        x = cv2.cvtColor(cv2.resize(img, (self.side, self.side)), cv2.COLOR_BGR2RGB)
        t0, c0 = time.perf_counter(), time.process_time()
        x = self.lm.preprocess(x.astype(np.float32)[None])
        with tf.GradientTape() as tape:
            conv, preds = self.grad_model(x)
            score = preds[:, int(tf.argmax(preds[0]))]
        grads = tape.gradient(score, conv)
        pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
        heat = np.mean(conv[0].numpy() * pooled.numpy(), axis=-1)
        model = (time.perf_counter() - t0, time.process_time() - c0)
        heat = np.maximum(heat, 0)
        heat /= max(float(heat.max()), 1e-12)
        heat = cv2.resize(heat, (img.shape[1], img.shape[0]))
        heat = cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET)
        superimposed = heat * 0.4 + img
        cv2.imwrite(str(out), superimposed)
        return model

    def run(self, files: list[Path], out: Path) -> dict[str, Any]:
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        model = [self.one(f, out / f"{f.stem}_cam.jpg") for f in files]
        wall = time.perf_counter() - t0
        return {"wall": wall, "model_s": sum(m[0] for m in model),
                "model_cpu_s": sum(m[1] for m in model), "n": len(files),
                "out_bytes": sum(p.stat().st_size for p in out.iterdir()),
                "in_bytes": sum(f.stat().st_size for f in files)}


# --- local and fleet sides ------------------------------------------------------------------------


MODEL_CPU = [0.0]  # process CPU seconds inside Grad-CAM model calls in this process


def count_model_cpu() -> None:
    """Wrap ``engine.cam_runner.cams`` (looked up at each call by the Grad-CAM compute stage) so
    this process adds up the CPU seconds of its model calls. In local mode nothing else runs
    while the model does (``run_staged``: prepare, then compute, then write), so the process's
    CPU time over a call is the model's. (In the worker the task threads and writers run
    beside the model thread: its model CPU cannot be told apart from outside.)"""
    import convatlas.shared.engine.cam_runner as g

    real = g.cams

    def cams(*a: Any, **k: Any) -> Any:
        c0 = time.process_time()
        try:
            return real(*a, **k)
        finally:
            MODEL_CPU[0] += time.process_time() - c0

    g.cams = cams  # type: ignore[assignment]


def local_run(plan: Any, tmp: Path) -> dict[str, Any]:
    from convatlas.producer.local import run_local

    out = Path(tempfile.mkdtemp(prefix="local-", dir=tmp))
    m0 = MODEL_CPU[0]
    t0 = time.perf_counter()
    report = run_local(plan, out, batch_size=16, progress=False)  # the CLI's default batch
    wall = time.perf_counter() - t0
    if report["counts"]["done"] != len(plan.jobs):
        raise RuntimeError(f"in-process run incomplete: {report['counts']}")
    res = {"wall": wall, "n": len(plan.jobs), "model_s": report["pipeline"]["model_seconds"],
           "model_cpu_s": MODEL_CPU[0] - m0,
           "input_wait_s": report["pipeline"]["input_wait_seconds"],
           "out_bytes": output_bytes_local(plan, out), "in_bytes": input_bytes(plan)}
    shutil.rmtree(out, ignore_errors=True)
    return res


class FleetSide:
    """Runs plans on the fleet and reads what it did."""

    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet

    @property
    def pid(self) -> int:
        assert self.fleet.worker is not None
        return int(self.fleet.worker.pid)

    def run(self, plan: Any, timeout: float = 1200) -> dict[str, Any]:
        from convatlas.producer.submit import submit_plan
        from convatlas.shared.report import report_key

        f = self.fleet
        off = len(f.log())
        t_epoch = time.time()
        t0 = time.perf_counter()
        res = submit_plan(plan, f.storage, f.app, f.settings)
        t_sub = time.perf_counter() - t0
        if res.already_done:
            raise RuntimeError(f"run {plan.run_id}: {res.already_done} jobs already in storage")
        key = report_key(plan.run_id)
        deadline = time.monotonic() + timeout
        while not f.storage.exists(key):  # one HEAD per 0.1 s: nothing heavier on the cores
            if f.worker is None or f.worker.poll() is not None:
                raise RuntimeError("worker died:\n" + f.log()[-3000:])
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {plan.run_id}: no report after {timeout:.0f} s")
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        t_end = time.time()
        return {"wall": wall, "submit_s": t_sub, "n": len(plan.jobs), "t_start": t_epoch,
                "t_end": t_end, "offset": off, "run_id": plan.run_id}

    def finish(self, plan: Any, r: dict[str, Any]) -> dict[str, Any]:
        """After the measured window: report sums, log batches, output bytes."""
        from convatlas.shared.report import report_key

        f = self.fleet
        report = json.loads(f.storage.get_bytes(report_key(plan.run_id)))
        if report["counts"]["done"] != len(plan.jobs):
            raise RuntimeError(f"fleet run incomplete: {report['counts']}")
        time.sleep(0.3)  # the last log line
        batches = [b for b in parse_batches(f.log()[r.pop("offset"):])
                   if r["t_start"] - 1 <= b["end"] <= r["t_end"] + 1]
        r["batches"] = batches
        r["model_s"] = report["pipeline"]["model_seconds"]
        r["input_wait_s"] = report["pipeline"]["input_wait_seconds"]
        r["out_bytes"] = self.output_bytes(plan)
        r["in_bytes"] = input_bytes(plan)
        return r

    def output_bytes(self, plan: Any) -> int:
        st = self.fleet.storage
        want = {f"{st.prefix}/{k}" for j in plan.jobs for k in j.outputs().values()}
        folders = {j.outcome_folders()[1] for j in plan.jobs}
        total = 0
        for folder in folders:
            pages = st.client.get_paginator("list_objects_v2").paginate(
                Bucket=st.bucket, Prefix=f"{st.prefix}/{folder}")
            total += sum(o["Size"] for p in pages for o in p.get("Contents", []) if o["Key"] in want)
        return total


def wait_figures(r: dict[str, Any]) -> dict[str, float]:
    """The model thread's input wait over one fleet run, from the worker log's batch lines.

    The first batch's logged wait also covers the idle time before the run (the batcher was
    idle since its previous batch), so it is clipped at the run's start; ``steady`` leaves the
    first batch out (the time the pipeline takes to fill)."""
    bs = sorted(r["batches"], key=lambda b: b["end"])
    if not bs:
        return {"fill": 0.0, "steady": 0.0, "share": 0.0, "steady_share": 0.0, "batches": 0}
    first_start = bs[0]["end"] - bs[0]["model"]
    fill = max(0.0, min(bs[0]["waited"], first_start - r["t_start"]))
    steady = sum(b["waited"] for b in bs[1:])
    return {"fill": fill, "steady": steady, "share": (fill + steady) / r["wall"],
            "steady_share": steady / r["wall"], "batches": len(bs),
            "first_batch_at": first_start - r["t_start"],
            "tail": r["t_end"] - bs[-1]["end"], "log_model": sum(b["model"] for b in bs)}


# --- measuring one run ----------------------------------------------------------------------------


def measured(meter: Meter, rss_pid: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s own figures plus CPU deltas and the peak RSS of ``rss_pid`` over the run."""
    reset = reset_peak(rss_pid)
    rss_before = status_mb(rss_pid, "VmRSS")
    a = meter.snap()
    r = fn()
    b = meter.snap()
    r["cpu"] = meter.diff(a, b)
    r["rss_before_mb"] = rss_before
    r["peak_mb"] = status_mb(rss_pid, "VmHWM")
    r["peak_reset"] = reset
    return r


def model_cpu_ratio(lm: Any) -> float:
    """CPU seconds per wall second of a batched Grad-CAM call alone (TF's thread pool on the
    2 cores), in this process: how to read 'CPU minus model seconds'."""
    import numpy as np

    from convatlas.shared.engine.cam_runner import cams

    rng = np.random.default_rng(1)
    ims = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(16)]
    cams(lm, ims, batch_size=16)
    c0, t0 = cpu_seconds(os.getpid(), tree=False), time.perf_counter()
    for _ in range(3):
        cams(lm, ims, batch_size=16)
    return (cpu_seconds(os.getpid(), tree=False) - c0) / (time.perf_counter() - t0)


# --- sections -------------------------------------------------------------------------------------


def warm_up(fs: FleetSide, book: Book, tmp: Path, settings: Any) -> None:
    """Load and trace on every side: the worker and run_local on runs of 1 and 3 small photos
    (two batch sizes: the batch dimension becomes generic), then one 12-MP and one 2-MP photo
    through all three sides."""
    from convatlas.producer.plans.heatmaps import plan_heatmaps

    for i, n in enumerate((1, 3)):
        d = make_small_photos(tmp / f"warm-{i}", n, seed=900 + i)
        plan = plan_heatmaps([str(d)], CAM_MODEL, None, None, settings)
        fs.finish(plan, fs.run(plan))
        local_run(plan, tmp)
    d = tmp / "warm-big"
    for k, (tag, w, h) in enumerate((("12mp", 4032, 3024), ("2mp", 1600, 1200))):
        src = make_big_photos(PHOTO_CACHE / f"warm-{tag}", 1, (w, h), seed=9000 + k)
        d.mkdir(exist_ok=True)
        shutil.copy(photo_files(src)[0], d / f"warm-{tag}.jpg")
    plan = plan_heatmaps([str(d)], CAM_MODEL, None, None, settings)
    fs.finish(plan, fs.run(plan))
    local_run(plan, tmp)
    book.run(photo_files(d), tmp / "book-warm")


def section_small(cfg: Config, fs: FleetSide, meter: Meter, tmp: Path,
                  settings: Any) -> list[dict[str, Any]]:
    from convatlas.producer.plans.heatmaps import plan_heatmaps

    reps = []
    for r in range(cfg.small_repeats):
        d = make_small_photos(tmp / f"small-{r}", cfg.small_n, seed=r)
        plan = plan_heatmaps([str(d)], CAM_MODEL, None, None, settings)
        if len(plan.jobs) != cfg.small_n:
            raise RuntimeError(f"{cfg.small_n} photos gave {len(plan.jobs)} jobs (duplicates?)")
        got: dict[str, Any] = {"order": ["fleet", "local"] if r % 2 == 0 else ["local", "fleet"]}
        for side in got["order"]:
            if side == "fleet":
                res = measured(meter, fs.pid, lambda p=plan: fs.run(p))
                got["fleet"] = fs.finish(plan, res)
            else:
                got["local"] = measured(meter, os.getpid(), lambda p=plan: local_run(p, tmp))
            say(f"small repeat {r + 1}/{cfg.small_repeats} {side}: {got[side]['wall']:.2f} s")
        reps.append(got)
    return reps


def section_big(cfg: Config, fs: FleetSide, book: Book, meter: Meter, tmp: Path,
                settings: Any) -> dict[str, list[dict[str, Any]]]:
    from convatlas.producer.plans.heatmaps import plan_heatmaps

    out: dict[str, list[dict[str, Any]]] = {}
    for k, (tag, w, h, n) in enumerate(cfg.sizes):
        per = n // cfg.big_repeats
        out[tag] = []
        for r in range(cfg.big_repeats):
            d = make_big_photos(PHOTO_CACHE / f"{tag}-n{per}-g{r}", per, (w, h), seed=100 * k + r)
            say(f"{tag} repeat {r + 1}: {per} photos in {d}")
            plan = plan_heatmaps([str(d)], CAM_MODEL, None, None, settings)
            if len(plan.jobs) != per:
                raise RuntimeError(f"{per} photos gave {len(plan.jobs)} jobs (duplicates?)")
            order = ["book", "local", "fleet"]
            if r % 2:
                order.reverse()
            got: dict[str, Any] = {"order": order}
            for side in order:
                if side == "book":
                    got["book"] = measured(meter, os.getpid(), lambda d=d, r=r, t=tag: book.run(
                        photo_files(d), tmp / f"book-{t}-{r}"))
                    shutil.rmtree(tmp / f"book-{tag}-{r}", ignore_errors=True)
                elif side == "local":
                    got["local"] = measured(meter, os.getpid(), lambda p=plan: local_run(p, tmp))
                else:
                    res = measured(meter, fs.pid, lambda p=plan: fs.run(p))
                    got["fleet"] = fs.finish(plan, res)
                say(f"{tag} repeat {r + 1}/{cfg.big_repeats} {side}: {got[side]['wall']:.2f} s "
                    f"({per / got[side]['wall']:.2f} photos/s)")
            out[tag].append(got)
    return out


def section_inflight(cfg: Config, fs: FleetSide, meter: Meter, settings: Any,
                     rss_model_loaded: float) -> dict[str, Any]:
    """The first ``cfg.inflight`` 12-MP photos of section 2 again, for another class (new
    result keys, same work): all of them in flight in the worker at once."""
    from convatlas.producer.plans.heatmaps import plan_heatmaps

    tag, _, _, n = cfg.sizes[0]
    per = n // cfg.big_repeats
    files = [f for r in range(cfg.big_repeats)
             for f in photo_files(PHOTO_CACHE / f"{tag}-n{per}-g{r}")][: cfg.inflight]
    plan = plan_heatmaps([str(f) for f in files], CAM_MODEL, INFLIGHT_CLASS, None, settings)
    res = measured(meter, fs.pid, lambda: fs.run(plan))
    res = fs.finish(plan, res)
    res["rss_model_loaded_mb"] = rss_model_loaded
    say(f"in flight: {len(files)} photos, worker peak {res['peak_mb']:.0f} MiB "
        f"(RSS with model {rss_model_loaded:.0f} MiB, before this run {res['rss_before_mb']:.0f})")
    return res


# --- the table ------------------------------------------------------------------------------------


def our_cpu(r: dict[str, Any], side: str) -> float:
    """CPU seconds of every process a side needs (the fleet: worker, SeaweedFS, Redis and
    this process, which submits and waits)."""
    c = r["cpu"]
    return c["self"] + ((c["worker"] + c["weed"] + c["redis"]) if side == "fleet" else 0.0)


def tot(rs: list[dict[str, Any]], f: Callable[[dict[str, Any]], float]) -> float:
    return sum(f(r) for r in rs)


def outside_ms(rs: list[dict[str, Any]], proc: str,
               model_ms: float | None = None) -> tuple[float | None, float]:
    """CPU ms per photo outside the model, median over runs: (process CPU − model CPU where
    the model's CPU is known or ``model_ms`` per photo is given for it, else CPU − model wall
    seconds, None where that is not measurable: the model's wall exceeded the CPU or is most
    of it) and, beside it, the issue's process CPU − model wall seconds."""
    by_wall = median([(r["cpu"][proc] - r["model_s"]) / r["n"] * 1000 for r in rs])
    mcs = [r.get("model_cpu_s") for r in rs]
    if model_ms is not None:
        return median([r["cpu"][proc] / r["n"] * 1000 - model_ms for r in rs]), by_wall
    if all(x is not None for x in mcs):
        return median([(r["cpu"][proc] - float(x)) / r["n"] * 1000
                       for r, x in zip(rs, mcs, strict=True) if x is not None]), by_wall
    model = median([r["model_s"] / r["n"] * 1000 for r in rs])
    cpu = median([r["cpu"][proc] / r["n"] * 1000 for r in rs])
    return (None if by_wall < 0 or model > 0.5 * cpu else by_wall), by_wall


def report(raw: dict[str, Any]) -> str:
    """Two plain tables from a run's raw measurements: the issue's targets, and where the CPU
    went per section and side (totals over the repeats)."""
    small, big, inf = raw["small"], raw["big"], raw["inflight"]

    def runs(section: str, side: str) -> list[dict[str, Any]]:
        return [rep[side] for rep in (small if section == "small" else big[section])]

    def rate(section: str, side: str) -> float:
        rs = runs(section, side)
        return tot(rs, lambda r: r["n"]) / tot(rs, lambda r: r["wall"])

    def rep_ratio(section: str, a: str, b: str) -> tuple[float, list[float]]:
        """Median over repeats of a's speed ÷ b's speed (same photos, same repeat)."""
        per = [rep[b]["wall"] / rep[a]["wall"]
               for rep in (small if section == "small" else big[section])]
        return median(per), per

    def cpu_ms(section: str, side: str) -> float:
        rs = runs(section, side)
        return tot(rs, lambda r: our_cpu(r, side)) / tot(rs, lambda r: r["n"]) * 1000

    def f(v: float | None, spec: str = ".2f") -> str:
        return "n/a" if v is None else format(v, spec)

    def check(v: float | None, target: float, at_most: bool = False) -> str:
        if v is None:
            return "not measurable"
        return "met" if (v <= target if at_most else v >= target) else "NOT MET"

    rows: list[tuple[str, ...]] = []

    def ratio_row(what: str, section: str, a: str, b: str, target: float | None) -> None:
        r, per = rep_ratio(section, a, b)
        rows.append((what, f"{rate(section, a):.2f} vs {rate(section, b):.2f} photos/s",
                     f"{r:.2f}x ({', '.join(f'{x:.2f}' for x in per)})",
                     "-" if target is None else f">= {target}x",
                     "-" if target is None else check(r, target)))

    if small:
        ratio_row("small: fleet vs local", "small", "fleet", "local", T_FLEET_VS_LOCAL)
    for tag in big:
        is12 = tag == "12mp"
        ratio_row(f"{tag}: local vs book", tag, "local", "book", T_LOCAL_VS_BOOK if is12 else None)
        ratio_row(f"{tag}: fleet vs local", tag, "fleet", "local",
                  T_FLEET_VS_LOCAL if is12 else None)
        n_all = tot(runs(tag, "local"), lambda r: r["n"])
        lo, lo_wall = outside_ms(runs(tag, "local"), "self")
        lmc = [r.get("model_cpu_s") for r in runs(tag, "local")]
        lo_model = (sum(float(x) for x in lmc if x is not None) / n_all * 1000
                    if all(x is not None for x in lmc) else None)
        wk, wk_wall = outside_ms(runs(tag, "fleet"), "worker", lo_model)
        bk, bk_wall = outside_ms(runs(tag, "book"), "self")
        rows.append((f"{tag}: CPU ms/photo outside the model (CPU - model CPU; - model wall)",
                     f"local {f(lo, '.0f')} ({lo_wall:.0f}); worker {f(wk, '.0f')} "
                     f"({wk_wall:.0f}); book {f(bk, '.0f')} ({bk_wall:.0f})", "-",
                     f"<= {T_CPU_MS:.0f} (local)" if is12 else "-",
                     check(lo, T_CPU_MS, at_most=True) if is12 else "-"))
        oi = {s: tot(runs(tag, s), lambda r: r["out_bytes"]) / tot(runs(tag, s),
                                                                   lambda r: r["in_bytes"])
              for s in ("local", "fleet", "book")}
        inb = tot(runs(tag, "local"), lambda r: r["in_bytes"]) / n_all / 1e6
        rows.append((f"{tag}: output / input bytes (input {inb:.2f} MB/photo)",
                     f"local {oi['local']:.2f}, fleet {oi['fleet']:.2f}, book {oi['book']:.2f}",
                     "-", f"<= {T_OUT_IN}x",
                     check(max(oi["local"], oi["fleet"]), T_OUT_IN, at_most=True)))
        peak = {s: max(r["peak_mb"] for r in runs(tag, s)) for s in ("local", "fleet", "book")}
        before = {s: median([r["rss_before_mb"] for r in runs(tag, s)]) for s in ("local", "fleet")}
        rows.append((f"{tag}: peak RSS MiB (VmHWM, reset before each run)",
                     f"local {peak['local']:.0f} (before {before['local']:.0f}); worker "
                     f"{peak['fleet']:.0f} (before {before['fleet']:.0f}); book {peak['book']:.0f}",
                     "-", "-", "-"))
        waits = [wait_figures(r) for r in runs(tag, "fleet")]
        ws = median([w["steady_share"] for w in waits])
        rows.append((f"{tag}: fleet model-thread wait / wall (steady; with the first batch; "
                     "report's sum)",
                     f"{ws:.1%}; {median([w['share'] for w in waits]):.1%}; "
                     f"{median([r['input_wait_s'] / r['wall'] for r in runs(tag, 'fleet')]):.0%}",
                     "-", f"<= {T_WAIT:.0%}", check(ws, T_WAIT, at_most=True)))
    if inf:
        grow = inf["peak_mb"] - inf["rss_model_loaded_mb"]
        rows.append((f"in flight: {inf['n']} photos of 12 MP, worker peak - RSS with the model",
                     f"{inf['peak_mb']:.0f} - {inf['rss_model_loaded_mb']:.0f} = {grow:+.0f} MiB "
                     f"(before this run {inf['rss_before_mb']:.0f})", "-",
                     f"<= +{T_INFLIGHT_MB:.0f} MiB", check(grow, T_INFLIGHT_MB, at_most=True)))

    cpu_rows = []
    for sec in (["small"] if small else []) + list(big):
        for side in (["fleet", "local"] if sec == "small" else ["book", "local", "fleet"]):
            rs = runs(sec, side)
            n = tot(rs, lambda r: r["n"])

            def ms(get: Callable[[dict[str, Any]], float], n: float = n,
                   rs: list[dict[str, Any]] = rs) -> str:
                return f"{tot(rs, get) / n * 1000:.0f}"

            mcs = [r.get("model_cpu_s") for r in rs]
            fleet = side == "fleet"
            cpu_rows.append((
                sec, side, n, f"{rate(sec, side):.2f}", f"{cpu_ms(sec, side):.0f}",
                ms(lambda r: r["cpu"]["self"]),
                *((ms(lambda r: r["cpu"]["worker"]), ms(lambda r: r["cpu"]["weed"]),
                   ms(lambda r: r["cpu"]["redis"])) if fleet else ("-", "-", "-")),
                ms(lambda r: r["model_s"]),
                (f"{sum(float(x) for x in mcs if x is not None) / n * 1000:.0f}"
                 if all(x is not None for x in mcs) else "-"),
                f"{tot(rs, lambda r, s=side: our_cpu(r, s)) / tot(rs, lambda r: r['wall']):.2f}",
                f"{tot(rs, lambda r: r['cpu']['others']) / tot(rs, lambda r: 2 * r['wall']):.0%}"))
    if inf:
        per = {k: f"{inf['cpu'][k] / inf['n'] * 1000:.0f}" for k in ("self", "worker", "weed",
                                                                       "redis")}
        cpu_rows.append(("in flight", "fleet", inf["n"], f"{inf['n'] / inf['wall']:.2f}",
                         f"{our_cpu(inf, 'fleet') / inf['n'] * 1000:.0f}", per["self"],
                         per["worker"], per["weed"], per["redis"],
                         f"{inf['model_s'] / inf['n'] * 1000:.0f}", "-",
                         f"{our_cpu(inf, 'fleet') / inf['wall']:.2f}",
                         f"{inf['cpu']['others'] / (2 * inf['wall']):.0%}"))
    return (table(("measure", "measured", "ratio (repeats)", "target", "verdict"), rows)
            + "\n\nCPU ms per photo (a side's processes: local and book = this process; fleet = "
            "worker + SeaweedFS + Redis + this process):\n\n"
            + table(("section", "side", "photos", "photos/s", "CPU ms", "this proc", "worker",
                     "SeaweedFS", "Redis", "model wall ms", "model CPU ms", "cores used",
                     "others' share"), cpu_rows)
            + f"\n\n({raw['cfg']} run, {raw['minutes']:.1f} min; model CPU/wall of a batched "
            f"call {raw['model_cpu_ratio']:.2f})")


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 + 6 photos, smoke check")
    ap.add_argument("--raw", type=Path, default=None,
                    help="raw measurements file (default: bench/raw/pipeline.json; --quick: "
                         "the temp folder)")
    ap.add_argument("--report-only", action="store_true",
                    help="print the tables from --raw, measuring nothing")
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    args.raw = raw_path("pipeline", args.quick, args.raw)
    if args.report_only:
        print(report(json.loads(args.raw.read_text())))
        return

    import warnings

    warnings.filterwarnings("ignore")
    from convatlas.shared.models.registry import get_model
    from convatlas.stack.harness import Fleet
    from convatlas.stack.servers import RedisServer, SeaweedS3Server

    env = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    t_all = time.perf_counter()
    redis = RedisServer(tmp / "redis", password=secrets.token_urlsafe(18))
    s3 = SeaweedS3Server(tmp / "seaweedfs")
    fleet = None
    try:
        say(f"starting Redis and SeaweedFS in {tmp}")
        redis.start()
        s3.start()
        fleet = Fleet.create(
            redis, s3, tmp / "fleet", visibility_timeout=3600, concurrency=128,  # user defaults
            extra_env={"CONVATLAS_BATCH_WINDOW_MS": "50", "CONVATLAS_MAX_BATCH": "64"})
        (tmp / "fleet").mkdir(parents=True, exist_ok=True)
        fleet.start_worker()
        fs = FleetSide(fleet)
        assert redis.pid is not None and s3.pid is not None
        meter = Meter({"self": os.getpid(), "worker": fs.pid, "weed": s3.pid, "redis": redis.pid})
        say(f"fleet up: worker pid {fs.pid}, SeaweedFS pid {s3.pid}, Redis pid {redis.pid}")
        lm = get_model(CAM_MODEL)
        count_model_cpu()
        import tensorflow as tf

        env["tf"] = tf.__version__
        book = Book(lm)
        settings = fleet.settings
        say("warming up (model load and tracing on every side)")
        warm_up(fs, book, tmp, settings)
        time.sleep(1.0)
        rss_model = status_mb(fs.pid, "VmRSS")
        ratio = model_cpu_ratio(lm)
        say(f"worker RSS with the model loaded {rss_model:.0f} MiB; model CPU/wall {ratio:.2f}")
        small = section_small(cfg, fs, meter, tmp, settings)
        big = section_big(cfg, fs, book, meter, tmp, settings)
        inflight = section_inflight(cfg, fs, meter, settings, rss_model)
    finally:
        say("stopping the fleet and the servers")
        if fleet is not None:
            fleet.close()
        s3.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    env["load_end"] = os.getloadavg()[0]
    raw = {"cfg": cfg.name, "env": env, "model_cpu_ratio": ratio, "small": small, "big": big,
           "inflight": inflight, "minutes": (time.perf_counter() - t_all) / 60}
    dump_raw(args.raw, raw)
    print(report(raw))


if __name__ == "__main__":
    main()
