#!/usr/bin/env python
"""Benchmark of the fleet pipeline (local stack: Redis + SeaweedFS + 1 Celery worker) against the
in-process engine, plus worker and producer memory.

    .venv/bin/python bench/bench_pipeline.py                # full run (~10 min on 2 cores), writes RESULTS-pipeline.md
    .venv/bin/python bench/bench_pipeline.py --quick        # tiny sizes, smoke check (about a minute; no write)
    .venv/bin/python bench/bench_pipeline.py --report-only  # rebuild the report from the last run's raw data

Sections:

1. Grad-CAM (efficientnet-lite0) on the same distinct photos: stack (submit_plan → report
   written by the run's ``finish`` callback) vs in-process ``run_local`` into a fresh
   ``LocalStorage``. Both sides have the model loaded and their compiled functions traced
   (warm-up runs first); neither side counts process start or model load.
2. One layer page of filter patterns (vgg16-hed block3_conv1 filters 0:64, 64 px, 40 steps):
   stack vs in-process ``run_local`` (one batch of 64 and the page reduce). The batch sizes the
   worker formed come from the job records in storage (info ``batch``) and the worker log.
3. Worker resident memory (VmRSS of the worker and its children) after 10, 100, 250, 500,
   1000 and 2000 real jobs (filter jobs, 16 px, 1 step, block1_conv1, a new seed per 64
   filters, so each is new).
4. Producer peak RSS (``ru_maxrss`` from ``wait4``, through a small launcher) of ``convatlas
   submit heatmaps DIR`` (no ``--wait``) for 100 vs 10 000 distinct 32×32 PNGs and for 100 big
   (800×600) PNGs, then the 10 000 again in a child that records its peak after each phase of
   planning and ``submit_plan`` (where the memory goes). The worker is stopped for this part.

Every speed figure is a RATIO of the two sides measured side by side in this run: A and B
alternate inside each repeat (the order flips every repeat) and the median ratio over repeats is
reported. Absolute times are for context only: the 2 cores are shared with other work.

The stack side waits for the run by polling the report object (one HEAD every 0.1 s) rather
than ``wait_for_run`` (which lists every job's folder once a second): the benchmark must not
load the cores it measures, nor add up to a second of polling to a few-second run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "RESULTS-pipeline.md"
PHOTOS = REPO / "samples" / "photos"
CAM_MODEL = "efficientnet-lite0"
GRID_MODEL = "vgg16-hed"

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    name: str
    cam_images: int
    cam_repeats: int
    grid_layer: str
    grid_filters: int
    grid_size: int
    grid_steps: int
    grid_repeats: int
    leak_checkpoints: tuple[int, ...]  # cumulative jobs at which the worker's RSS is read
    submit_small: int
    submit_large: int
    s3_ops: int


FULL = Config(
    "full",
    cam_images=200,
    cam_repeats=5,
    grid_layer="block3_conv1",
    grid_filters=64,
    grid_size=64,
    grid_steps=40,
    grid_repeats=3,
    leak_checkpoints=(10, 100, 250, 500, 1000, 2000),
    submit_small=100,
    submit_large=10_000,
    s3_ops=40,
)
QUICK = Config(
    "quick",
    cam_images=12,
    cam_repeats=1,
    grid_layer="block3_conv1",
    grid_filters=8,
    grid_size=32,
    grid_steps=2,
    grid_repeats=1,
    leak_checkpoints=(5, 40),
    submit_small=10,
    submit_large=200,
    s3_ops=10,
)


# --- small helpers --------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def _status_kb(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def tree_rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and all its descendants, MiB."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _status_kb(p, "VmRSS")
        todo.extend(_children(p))
    return total / 1024


def ratio_median(a: list[float], b: list[float]) -> float:
    """Median over repeats of a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def fmt_sizes(sizes: list[int]) -> str:
    if len(sizes) <= 14:
        return str(sizes)
    c = Counter(sizes)
    return "{" + ", ".join(f"{k}×{v}" for k, v in sorted(c.items(), reverse=True)) + "}"


# --- inputs ---------------------------------------------------------------------------------------


def make_photos(dest: Path, n: int, seed: int) -> Path:
    """``n`` distinct small JPEGs: random crops (and flips, brightness) of the sample photos."""
    import cv2
    import numpy as np

    srcs = [
        cv2.imread(str(p))
        for p in sorted(PHOTOS.iterdir())
        if p.suffix.lower() in (".png", ".jpg", ".jpeg")
    ]
    srcs = [s for s in srcs if s is not None]
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


def make_noise_pngs(
    dest: Path, n: int, seed: int, side: tuple[int, int] = (32, 32)
) -> tuple[Path, int]:
    """``n`` distinct noise PNGs of ``side`` (h, w) pixels; returns (folder, total bytes)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(n):
        ok, buf = cv2.imencode(".png", rng.integers(0, 256, (*side, 3), dtype=np.uint8))
        assert ok
        sub = dest / f"{i // 1000:02d}"  # like a real folder tree; plan walks it recursively
        sub.mkdir(exist_ok=True)
        (sub / f"t{i:05d}.png").write_bytes(buf.tobytes())
        total += len(buf)
    return dest, total


# --- the stack ------------------------------------------------------------------------------------


@dataclass
class StackRun:
    wall: float  # submit_plan start → report present
    submit: float  # submit_plan alone (upload, manifest, canvas, send)
    batches: list[tuple[float, int, float]]  # (end epoch, jobs, seconds) from the worker log
    t_start: float  # epoch
    t_submitted: float
    t_end: float


class Fleet:
    """The producer side of a running ``LocalStack``."""

    def __init__(self, stack: Any) -> None:
        from convatlas.shared.config import Settings
        from convatlas.shared.storage import s3_storage_from_settings
        from convatlas.workers.config import make_app

        self.stack = stack
        os.environ.update(stack.env())
        self.settings = Settings.from_env()
        self.storage = s3_storage_from_settings(self.settings)
        self.app = make_app(self.settings)
        self.log = stack.logs / "worker0.log"

    @property
    def worker_pid(self) -> int:
        return self.stack.pids()["worker0"]

    def _log_offset(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    _BATCH = re.compile(
        r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): [A-Z]+/[^\]]*\].*?batch of (\d+) jobs "
        r"\([^)]*\) in ([\d.]+) s"
    )

    def _batches_since(self, offset: int) -> list[tuple[float, int, float]]:
        with open(self.log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out = []
        for m in self._BATCH.finditer(text):
            ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((ts, int(m.group(2)), float(m.group(3))))
        return out

    def wait_report(self, run_id: str, timeout: float, poll: float = 0.1) -> None:
        from convatlas.shared.report import report_key

        key = report_key(run_id)
        deadline = time.monotonic() + timeout
        while not self.storage.exists(key):
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id}: no report after {timeout:.0f} s")
            if self.stack.dead():
                raise RuntimeError(f"stack parts died: {self.stack.dead()}")
            time.sleep(poll)

    def submit(self, plan: Any) -> Any:
        from convatlas.producer.submit import submit_plan

        res = submit_plan(plan, self.storage, self.app)
        if res.already_done:
            raise RuntimeError(f"run {plan.run_id}: {res.already_done} jobs already in storage")
        return res

    def run(self, plan: Any, timeout: float = 900) -> StackRun:
        off = self._log_offset()
        t_start = time.time()
        t0 = time.perf_counter()
        self.submit(plan)
        t_sub = time.perf_counter()
        t_submitted = time.time()
        self.wait_report(plan.run_id, timeout)
        t1 = time.perf_counter()
        t_end = time.time()
        time.sleep(0.3)  # let the last log line reach the file
        return StackRun(t1 - t0, t_sub - t0, self._batches_since(off), t_start, t_submitted, t_end)

    def records(self, plan: Any) -> list[dict[str, Any]]:
        return [json.loads(self.storage.get_bytes(j.marker)) for j in plan.jobs]


# --- in-process -----------------------------------------------------------------------------------


def local_run(plan: Any, tmp: Path) -> tuple[float, list[dict[str, Any]]]:
    from convatlas.producer.local import run_local

    out = Path(tempfile.mkdtemp(prefix="local-", dir=tmp))
    t0 = time.perf_counter()
    report = run_local(plan, out, progress=False)
    wall = time.perf_counter() - t0
    if report["counts"]["done"] != len(plan.jobs):
        raise RuntimeError(f"in-process run incomplete: {report['counts']}")
    recs = [json.loads((out / j.marker).read_bytes()) for j in plan.jobs]
    shutil.rmtree(out, ignore_errors=True)
    return wall, recs


# --- section results ------------------------------------------------------------------------------


@dataclass
class Pair:
    stack: StackRun
    local: float
    stack_compute: float  # sum of per-job model seconds from the records
    local_compute: float
    sizes: list[int]  # batch sizes from the worker log, in order
    record_sizes: Counter  # batch size → jobs that report it (records' info "batch")
    n: int


def decompose(p: Pair) -> dict[str, float]:
    """The stack run's wall time cut into consecutive parts (worker-log timestamps and the
    producer's clock; same machine): they add up to ``wall``."""
    s = p.stack
    busy = sum(b[2] for b in s.batches)
    if s.batches:
        first_start = min(end - dur for end, _, dur in s.batches)
        last_end = max(end for end, _, _ in s.batches)
    else:
        first_start = last_end = s.t_submitted
    return {
        "wall": s.wall,
        "submit": s.submit,  # submit_plan's own duration (overlaps the first batches)
        "before_first": first_start - s.t_start,
        "busy": busy,
        "compute": p.stack_compute,
        "batch_io": busy - p.stack_compute,
        "between": (last_end - first_start) - busy,
        "tail": s.t_end - last_end,
    }


def pair_runs(fleet: Fleet, tmp: Path, plans: list[Any], label: str) -> list[Pair]:
    pairs = []
    for r, plan in enumerate(plans):
        order = ("stack", "local") if r % 2 == 0 else ("local", "stack")
        got: dict[str, Any] = {}
        for side in order:
            if side == "stack":
                got["stack"] = fleet.run(plan)
                got["stack_recs"] = fleet.records(plan)
            else:
                got["local"], got["local_recs"] = local_run(plan, tmp)
            say(
                f"{label} repeat {r + 1}/{len(plans)} {side}: "
                f"{got['stack'].wall if side == 'stack' else got['local']:.2f} s"
            )
        srecs, lrecs = got["stack_recs"], got["local_recs"]
        pairs.append(
            Pair(
                got["stack"],
                got["local"],
                sum(x["seconds"] for x in srecs),
                sum(x["seconds"] for x in lrecs),
                [b[1] for b in got["stack"].batches],
                Counter(x["batch"] for x in srecs),
                len(plan.jobs),
            )
        )
    return pairs


# --- sections -------------------------------------------------------------------------------------


def section_leak(cfg: Config, fleet: Fleet) -> dict[str, Any]:
    """Worker RSS at cumulative job counts (filter jobs, each new: a new seed per 64 filters)."""
    from convatlas.producer.plan import plan_grids
    from convatlas.shared.engine.patterns import PatternParams

    rss = {0: tree_rss_mb(fleet.worker_pid)}
    done, seed = 0, 10_000
    t0 = time.perf_counter()
    for target in cfg.leak_checkpoints:
        plans = []
        while done < target:
            k = min(64, target - done)
            plans.append(
                plan_grids(
                    GRID_MODEL,
                    "block1_conv1",
                    f"0:{k}",
                    PatternParams(16, 1, seed=seed),
                    fleet.settings,
                )
            )
            seed += 1
            done += k
        for plan in plans:
            fleet.submit(plan)
        for plan in plans:
            fleet.wait_report(plan.run_id, 900)
        time.sleep(2.0)
        rss[target] = tree_rss_mb(fleet.worker_pid)
        say(f"leak: {target} jobs, worker RSS {rss[target]:.0f} MiB")
    return {"rss": rss, "seconds": time.perf_counter() - t0}


def warm_cam(fleet: Fleet, tmp: Path) -> None:
    """Load efficientnet-lite0 and trace its Grad-CAM for two batch sizes, on both sides
    (with ``reduce_retracing`` the second size makes the batch dimension generic)."""
    from convatlas.producer.plan import plan_heatmaps

    for i, n in enumerate((1, 3)):
        d = make_photos(tmp / f"warm-cam-{i}", n, seed=900 + i)
        plan = plan_heatmaps([str(d)], CAM_MODEL, None, None, fleet.settings)
        fleet.run(plan)
        local_run(plan, tmp)


def section_cam(cfg: Config, fleet: Fleet, tmp: Path) -> list[Pair]:
    from convatlas.producer.plan import plan_heatmaps

    warm_cam(fleet, tmp)
    plans = []
    for r in range(cfg.cam_repeats):
        d = make_photos(tmp / f"cam-{r}", cfg.cam_images, seed=r)
        plan = plan_heatmaps([str(d)], CAM_MODEL, None, None, fleet.settings)
        if len(plan.jobs) != cfg.cam_images:
            raise RuntimeError(f"{cfg.cam_images} photos gave {len(plan.jobs)} jobs (duplicates?)")
        plans.append(plan)
    return pair_runs(fleet, tmp, plans, "grad-cam")


def section_grid(cfg: Config, fleet: Fleet, tmp: Path) -> list[Pair]:
    from convatlas.producer.plan import plan_grids
    from convatlas.shared.engine.patterns import PatternParams

    def plan(filters: str, steps: int, seed: int) -> Any:
        return plan_grids(
            GRID_MODEL,
            cfg.grid_layer,
            filters,
            PatternParams(cfg.grid_size, steps, seed=seed),
            fleet.settings,
        )

    # warm-up: load vgg16-hed (the worker has it from the leak section) and trace the ascent
    # of this layer: the worker for two batch sizes, the in-process side for its page size
    fleet.run(plan("0:2", 1, 500))
    fleet.run(plan("0:5", 1, 501))
    local_run(plan(f"0:{cfg.grid_filters}", 1, 502), tmp)
    plans = [
        plan(f"0:{cfg.grid_filters}", cfg.grid_steps, 600 + r) for r in range(cfg.grid_repeats)
    ]
    return pair_runs(fleet, tmp, plans, "grid")


def s3_latency(fleet: Fleet, n: int) -> dict[str, float]:
    """Median ms of one PUT (20 KB), HEAD, GET and a missing-key HEAD, from this process."""
    data = os.urandom(20_000)
    times: dict[str, list[float]] = {"put": [], "head": [], "get": [], "head_miss": []}
    st = fleet.storage
    for i in range(n):
        key = f"bench/lat/{i}"
        for op, fn in (
            ("put", lambda k=key: st.put_bytes(k, data)),
            ("head", lambda k=key: st.exists(k)),
            ("get", lambda k=key: st.get_bytes(k)),
            ("head_miss", lambda k=key: st.exists(k + "-missing")),
        ):
            t0 = time.perf_counter()
            fn()
            times[op].append((time.perf_counter() - t0) * 1000)
    for i in range(n):
        st.delete(f"bench/lat/{i}")
    return {k: statistics.median(v) for k, v in times.items()}


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "convatlas"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "convatlas.producer.cli"]


# Starts the command and reports its rusage from wait4. A separate small launcher is needed:
# Linux keeps the largest RSS a process had across exec(), and a child that this (large)
# process spawns through vfork inherits this process's high-water mark as its own ru_maxrss.
_LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL)
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": ru.ru_maxrss}, f)
"""


def run_measured(argv: list[str], timeout: float) -> tuple[float, float, str]:
    """(peak RSS MiB of the command alone, seconds, output)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "rusage.json"
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _LAUNCHER, str(res), *argv],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        wall = time.perf_counter() - t0
        text = proc.stdout.decode(errors="replace")
        ru = json.loads(res.read_text()) if res.exists() else {"rc": proc.returncode}
    if proc.returncode != 0 or ru["rc"] != 0:
        raise RuntimeError(f"{argv[:4]} exited {ru['rc']}:\n{text[-2000:]}")
    return ru["maxrss_kb"] / 1024, wall, text


def phases_child(folder: str, out_json: str) -> None:
    """(child mode) ``convatlas submit heatmaps FOLDER`` run through the real CLI entry point,
    with the peak (VmHWM) and current RSS recorded after each phase and at exit."""
    import atexit

    import convatlas.producer.plan as plan_mod
    import convatlas.producer.submit as sub

    marks: list[tuple[str, float, float]] = []
    info: dict[str, Any] = {}

    def mark(name: str) -> None:
        marks.append(
            (name, _status_kb(os.getpid(), "VmHWM") / 1024, _status_kb(os.getpid(), "VmRSS") / 1024)
        )

    def wrap(mod: Any, attr: str, name: str) -> None:
        fn = getattr(mod, attr)

        def inner(*a: Any, **k: Any) -> Any:
            r = fn(*a, **k)
            if attr == "plan_heatmaps":
                info["plan"] = r  # its manifest is measured at exit, after every mark
                info["tensorflow_after_plan"] = "tensorflow" in sys.modules
            mark(name)
            return r

        setattr(mod, attr, inner)

    def dump() -> None:
        mark("interpreter exit (atexit)")
        plan = info.pop("plan", None)
        info["manifest_bytes"] = len(json.dumps(plan.manifest(), indent=2)) if plan else 0
        Path(out_json).write_text(json.dumps({"marks": marks, **info}))

    atexit.register(dump)  # registered first, so it runs after every other exit hook
    import convatlas.producer.cli

    mark("CLI imports")
    wrap(plan_mod, "model_weights_id", "model_weights_id (imports keras, TensorFlow)")
    wrap(plan_mod, "plan_heatmaps", "plan_heatmaps rest (walk, sha256, job lists)")
    wrap(sub, "upload_inputs", "upload_inputs")
    wrap(sub, "write_manifest", "write_manifest")
    wrap(sub, "build_canvas", "build_canvas")
    wrap(sub, "submit_plan", "chord apply_async (send), submit_plan returns")
    sys.argv = ["convatlas", "submit", "heatmaps", folder, "--model", CAM_MODEL]
    convatlas.producer.cli.main()


def section_producer(cfg: Config, fleet: Fleet, tmp: Path) -> dict[str, Any]:
    """Peak RSS of ``convatlas submit heatmaps DIR`` for few small, many small and few big
    images, then the many-small submission again with the peak recorded after each phase."""
    # no consumer while the queue fills: the worker would compete for the cores and the
    # producer's memory does not depend on it
    fleet.stack.workers[0].halt(fleet.stack.worker_stop_timeout)
    out: dict[str, Any] = {}
    cases = (
        ("small", cfg.submit_small, (32, 32)),
        ("large", cfg.submit_large, (32, 32)),
        ("big", cfg.submit_small, (600, 800)),
    )
    for name, n, side in cases:
        d, nbytes = make_noise_pngs(tmp / f"png-{name}", n, seed=len(out) * 100_000, side=side)
        peak, wall, text = run_measured(
            [*_cli(), "submit", "heatmaps", str(d), "--model", CAM_MODEL], 900
        )
        m = re.search(r"(\d+) jobs queued", text)
        queued = int(m.group(1)) if m else -1
        if queued != n:
            raise RuntimeError(f"submit of {n} images queued {queued}:\n{text[-1500:]}")
        out[name] = {"n": n, "side": list(side), "peak": peak, "wall": wall, "bytes": nbytes}
        say(
            f"producer: {n} images {side[1]}x{side[0]} ({nbytes / 1e6:.1f} MB): "
            f"peak RSS {peak:.0f} MiB, {wall:.1f} s"
        )
    # where the memory goes: the same CLI command on the many-small folder, in a child that
    # records its peak after each phase (inputs are uploaded already: HEADs only)
    marks = tmp / "phases.json"
    peak, _, _ = run_measured(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_phases",
            str(tmp / "png-large"),
            str(marks),
        ],
        900,
    )
    out["phases"] = {**json.loads(marks.read_text()), "peak": peak}
    with contextlib.suppress(Exception):
        fleet.app.control.purge()
    return out


# --- report ---------------------------------------------------------------------------------------


def build_report(
    cfg: Config,
    env: dict[str, Any],
    leak: dict[str, Any],
    cam: list[Pair],
    grid: list[Pair],
    lat: dict[str, float],
    prod: dict[str, Any],
) -> tuple[str, str]:
    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    def median_pair(pairs: list[Pair]) -> Pair:
        """The repeat whose ratio is the median (its parts add up, unlike medians of parts)."""
        return sorted(pairs, key=lambda p: p.local / p.stack.wall)[len(pairs) // 2]

    rows: list[tuple[str, ...]] = []
    # 1. Grad-CAM
    cam_ratio = ratio_median([p.local for p in cam], [p.stack.wall for p in cam])
    n_cam = cam[0].n
    rows.append(
        (
            f"1. Grad-CAM, {n_cam} distinct photos ({CAM_MODEL}): stack, 1 worker vs in-process "
            f"`run_local`",
            f"{n_cam / med([p.stack.wall for p in cam]):.1f} vs "
            f"{n_cam / med([p.local for p in cam]):.1f} photos/s",
            f"{cam_ratio:.2f}×",
            "≥ 0.85×",
            "met" if cam_ratio >= 0.85 else "**not met**",
        )
    )
    # 2. grid page
    grid_ratio = ratio_median([p.local for p in grid], [p.stack.wall for p in grid])
    nf = grid[0].n
    rows.append(
        (
            f"2. One page {GRID_MODEL} {cfg.grid_layer} filters 0:{nf} ({cfg.grid_size} px, "
            f"{cfg.grid_steps} steps): stack vs in-process batch of {nf}",
            f"{med([p.stack.wall for p in grid]):.1f} vs {med([p.local for p in grid]):.1f} s/page",
            f"{grid_ratio:.2f}×",
            "≥ 0.8×",
            "met" if grid_ratio >= 0.8 else "**not met**",
        )
    )
    # 3. worker RSS
    rss = leak["rss"]
    cps = cfg.leak_checkpoints
    a, b = (10, 1000) if 10 in rss and 1000 in rss else (cps[0], cps[-1])
    leak_ratio = rss[b] / rss[a]
    last = cps[-1]
    rows.append(
        (
            f"3. Worker RSS (VmRSS, with children) after {a} vs {b} jobs (then {last})",
            f"{rss[a]:.0f} → {rss[b]:.0f} MiB (→ {rss[last]:.0f})",
            f"{leak_ratio:.3f}×",
            "no growth beyond noise",
            "met" if leak_ratio <= 1.05 else "**not met**",
        )
    )
    # 4. producer
    sm, lg, bg = prod["small"], prod["large"], prod["big"]
    prod_ratio = lg["peak"] / sm["peak"]
    big_ratio = bg["peak"] / sm["peak"]
    per_img_kb = (lg["peak"] - sm["peak"]) * 1024 / (lg["n"] - sm["n"])
    img_kb = lg["bytes"] / lg["n"] / 1024
    rows.append(
        (
            f"4a. Producer peak RSS, `submit heatmaps` {lg['n']} vs {sm['n']} 32×32 PNGs",
            f"{lg['peak']:.0f} vs {sm['peak']:.0f} MiB (image bytes ×{lg['bytes'] / sm['bytes']:.0f})",
            f"{prod_ratio:.2f}×",
            "not ~linear in image bytes",
            f"bytes: bounded; count: +{per_img_kb:.1f} KiB/image",
        )
    )
    rows.append(
        (
            f"4b. Producer peak RSS, {bg['n']} big PNGs ({bg['bytes'] / 1e6:.0f} MB) vs {sm['n']} "
            f"32×32 PNGs",
            f"{bg['peak']:.0f} vs {sm['peak']:.0f} MiB (image bytes "
            f"×{bg['bytes'] / sm['bytes']:.0f})",
            f"{big_ratio:.2f}×",
            "not ~linear in image bytes",
            "met" if big_ratio <= 1.05 else "**not met**",
        )
    )

    table = (
        "| Measure | Stack vs reference | Ratio | Target | Verdict |\n"
        "|---|---|---|---|---|\n" + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )

    # --- details
    det = [
        "Per repeat (A/B order alternates; ratio = in-process time / stack time; the stack's "
        "wall time cut into consecutive parts from the worker log's batch lines: they add up "
        "to the wall time; `compute` = model seconds reported by the job records, the rest "
        "of a batch is storage I/O + image decode/encode):\n",
        "| Section | Rep | Stack s | In-proc s | Ratio | start → 1st batch | batches: compute "
        "| batches: storage + encode | idle between batches | last batch → report seen "
        "| (submit_plan s) | In-proc compute | In-proc rest | Worker batch sizes (log order) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, pairs in (("grad-cam", cam), ("grid", grid)):
        for i, p in enumerate(pairs):
            d = decompose(p)
            det.append(
                f"| {name} | {i + 1} | {p.stack.wall:.2f} | {p.local:.2f} | "
                f"{p.local / p.stack.wall:.2f} | {d['before_first']:.2f} | {d['compute']:.2f} | "
                f"{d['batch_io']:.2f} | {d['between']:.2f} | {d['tail']:.2f} | "
                f"({d['submit']:.2f}) | {p.local_compute:.2f} | {p.local - p.local_compute:.2f} | "
                f"{fmt_sizes(p.sizes)} |"
            )
    det.append("")
    det.append(
        "Batch sizes from the job records (info `batch` → number of jobs): "
        + "; ".join(
            f"{nm} r{i + 1}: {dict(sorted(p.record_sizes.items()))}"
            for nm, ps in (("grad-cam", cam), ("grid", grid))
            for i, p in enumerate(ps)
        )
        + ".\n"
    )
    det.append(
        f"S3 (SeaweedFS on loopback, boto3) from the producer process, median of "
        f"{cfg.s3_ops}: PUT 20 KB {lat['put']:.1f} ms, HEAD {lat['head']:.1f} ms, HEAD of "
        f"a missing key {lat['head_miss']:.1f} ms, GET 20 KB {lat['get']:.1f} ms.\n"
    )
    det.append(
        "Worker RSS (MiB) by cumulative jobs (filter jobs, block1_conv1, 16 px, 1 step, "
        "a new seed per 64): "
        + ", ".join(f"{k}: {v:.0f}" for k, v in rss.items())
        + f" ({leak['seconds']:.0f} s for {last} jobs).\n"
    )
    det.append(
        f"Producer (`convatlas submit heatmaps DIR --model {CAM_MODEL}`, no --wait; peak "
        f"= ru_maxrss from wait4): "
        + "; ".join(
            f"{c['n']} PNGs {c['side'][1]}×{c['side'][0]} "
            f"({c['bytes'] / 1e6:.1f} MB): {c['peak']:.0f} MiB in {c['wall']:.1f} s"
            for c in (sm, lg, bg)
        )
        + ".\n"
    )
    ph = prod["phases"]
    det.append(
        f"Peak (VmHWM) and current RSS after each phase of the same {lg['n']}-image "
        f"submission through the CLI entry point (inputs already uploaded, so HEADs "
        f"only; manifest {ph['manifest_bytes'] / 1e6:.1f} MB of JSON; peak from wait4 "
        f"{ph['peak']:.0f} MiB):\n"
    )
    det.append("| Phase (in order) | Peak MiB | RSS MiB | Peak growth MiB |")
    det.append("|---|---|---|---|")
    prev = None
    for name, hwm, cur in ph["marks"]:
        det.append(
            f"| {name} | {hwm:.0f} | {cur:.0f} | {'' if prev is None else f'{hwm - prev:+.0f}'} |"
        )
        prev = hwm
    details = "\n".join(det) + "\n"

    # --- explanations
    ex = []
    p = median_pair(cam)
    d = decompose(p)
    n = p.n
    io_stack = d["batch_io"] / n * 1000
    io_local = (p.local - p.local_compute) / n * 1000
    s3_serial = 2 * lat["head_miss"] + lat["get"] + 4 * lat["put"]
    ex.append(
        f"**1. Grad-CAM: {cam_ratio:.2f}× (target 0.85×, "
        f"{'met' if cam_ratio >= 0.85 else 'not met'}).** In the median repeat the stack took "
        f"{p.stack.wall:.2f} s against {p.local:.2f} s. Model compute is close "
        f"({d['compute']:.2f} s vs {p.local_compute:.2f} s, batches of "
        f"{fmt_sizes(p.sizes)} vs a fixed 16), so the gap is I/O and scheduling. "
        f"(a) Storage inside the batches: {d['batch_io']:.2f} s, {io_stack:.1f} ms per photo, "
        f"against {io_local:.1f} ms per photo for everything but the model in-process (local "
        f"files). For each photo the batch does 2 HEADs (`existing_result` again in "
        f"`run_gradcam_jobs`), 1 GET of the input and 4 PUTs (heatmap, overlay, cam.npy, "
        f"record), overlapped 8 at a time (`convatlas.shared.jobs.io_map`): {s3_serial:.1f} ms per photo "
        f"if they ran one after another, against a measured difference of "
        f"{io_stack - io_local:.1f} ms per photo; meanwhile the model waits. Each task thread also does 2 HEADs of its own (the pre-check), and "
        f"SeaweedFS and boto3 signing burn CPU on the same 2 cores. "
        f"(b) {d['before_first']:.2f} s from the start to the first batch: `submit_plan` hashes, "
        f"HEADs and PUTs each of the {n} photos, writes the manifest and sends {n + 1} messages "
        f"before any task can run (submit_plan took {d['submit']:.2f} s in all). "
        f"(c) {d['between']:.2f} s with the batcher idle between its {len(p.sizes)} batches "
        f"({d['between'] / max(1, len(p.sizes) - 1) * 1000:.0f} ms per gap): each batch waits "
        f"up to the 50 ms window after each arrival, and a finished batch's threads must ack, fetch "
        f"and pre-check their next tasks before those can join a batch (prefetch 1). "
        f"(d) {d['tail']:.2f} s from the last batch to the report: the `finish_run` chord "
        f"callback lists every result folder, writes report.json and the gallery with "
        f"presigned links, then the 0.1 s poll sees it."
    )
    p = median_pair(grid)
    d = decompose(p)
    first = p.sizes[0] if p.sizes else 0
    gr = [f"{q.local / q.stack.wall:.2f}" for q in grid]
    crv = [q.stack_compute / q.local_compute for q in grid]
    cr = [f"{x:.2f}" for x in crv]
    ex.append(
        f"**2. Filter page: {grid_ratio:.2f}× (target 0.8×, "
        f"{'met' if grid_ratio >= 0.8 else 'not met'}).** The model dominates: in the median "
        f"repeat {d['compute']:.1f} s of the stack's {p.stack.wall:.1f} s is model compute "
        f"(in-process {p.local_compute:.1f} s of {p.local:.1f} s); storage in the batches "
        f"{d['batch_io']:.2f} s, start → first batch {d['before_first']:.2f} s, idle between "
        f"batches {d['between']:.2f} s, last batch → report {d['tail']:.2f} s (this includes "
        f"the page's `reduce_grid`: {nf} tile GETs, {nf} record HEADs + GETs, 2 PUTs). The "
        f"worker never formed one batch of {nf}: batches were "
        + ", ".join(fmt_sizes(q.sizes) for q in grid)
        + f". The worker has 2 × 64 task threads (prefetch 1), so a batch can reach "
        f"CONVATLAS_MAX_BATCH (64); but the first batch closes once no job arrived for 50 ms "
        f"(at most 200 ms after its first) while the tasks are still being fetched "
        f"and pre-checked (8 at a time), so it starts small ({first} here). The smaller batches "
        f"cost {statistics.median(crv) - 1:+.0%} model time in the median repeat "
        f"(stack/in-process model-compute ratio per repeat {', '.join(cr)}; time ratio per "
        f"repeat {', '.join(gr)}), i.e. {d['compute'] - p.local_compute:.1f} s of the "
        f"{p.stack.wall - p.local:.1f} s gap; the rest is storage in the batches, the reduce "
        f"and the report."
    )
    steps = [k for k in rss if k]
    last_rate = (
        (rss[steps[-1]] - rss[steps[-2]]) * 1024 / (steps[-1] - steps[-2])
        if len(steps) > 1
        else 0.0
    )
    after = [
        f"{steps[i]}→{steps[i + 1]}: {rss[steps[i + 1]] - rss[steps[i]]:+.0f} MiB "
        f"({(rss[steps[i + 1]] - rss[steps[i]]) * 1024 / (steps[i + 1] - steps[i]):.0f} KiB/job)"
        for i in range(len(steps) - 1)
    ]
    ex.append(
        f"**3. Worker memory: {leak_ratio:.3f}× from {a} to {b} jobs "
        f"({'within' if leak_ratio <= 1.05 else 'beyond'} the 5% taken as noise).** "
        f"0 → {steps[0]} jobs is the model load and tracing ({rss[0]:.0f} → "
        f"{rss[steps[0]]:.0f} MiB). Then by interval: {'; '.join(after)}. The first hundred "
        f"jobs are warm-up (the threads pool starts its 32 threads on demand, the first "
        f"batches of new sizes). Some later growth is bounded by design: Celery keeps the ids "
        f"of the last 1000 successful requests (`SUCCESSFUL_MAX`) and the batcher the last "
        f"1000 batch sizes, and both are full after 1000 jobs. The rate per job keeps "
        f"falling, but it is not zero after {last} jobs: at the last interval's rate "
        f"({last_rate:.0f} KiB/job) 100 000 more jobs would add "
        f"≈{last_rate * 100_000 / 1024:.0f} MiB, so a longer run (10^4–10^5 jobs) is needed to "
        f"tell allocator settling from a slow leak."
    )
    hw = [(nm, h) for nm, h, _ in ph["marks"]]
    grow = {hw[i][0]: hw[i][1] - hw[i - 1][1] for i in range(1, len(hw))}
    wid = next((v for k, v in grow.items() if k.startswith("model_weights_id")), 0.0)
    man = next((v for k, v in grow.items() if k.startswith("write_manifest")), 0.0)
    snd = next((v for k, v in grow.items() if k.startswith("chord")), 0.0)
    cnv = next((v for k, v in grow.items() if k.startswith("build_canvas")), 0.0)
    ex.append(
        f"**4. Producer memory: {prod_ratio:.2f}× for {lg['n']} vs {sm['n']} small images, "
        f"{big_ratio:.2f}× for {bg['bytes'] / 1e6:.0f} MB of big images.** Image bytes are "
        f"streamed: `sha256_file` reads 1 MiB chunks and `upload_inputs` holds one file at a "
        f"time, so {bg['n']} images of {bg['bytes'] / bg['n'] / 1e6:.1f} MB each peak where "
        f"{sm['n']} tiny ones do. The producer is not streaming in the number of images, though: "
        f"{per_img_kb:.1f} KiB more per image (against {img_kb:.1f} KiB of image bytes per "
        f"image). By phase: "
        + ", ".join(
            f"{k} {v:+.0f} MiB"
            for k, v in grow.items()
            if v >= 1 and not k.startswith("model_weights_id")
        )
        + f" (`upload_inputs` does only HEADs here: its share is creating the boto3 S3 client, "
        f"the same for any folder). In producer/submit.py, `write_manifest` builds the whole "
        f"manifest (all jobs and inputs) as one `json.dumps(..., indent=2)` string and its "
        f"bytes ({ph['manifest_bytes'] / 1e6:.1f} MB of text, {man:+.0f} MiB peak), and "
        f"`submit_plan` builds one chord with {lg['n']} header signatures (`build_canvas`, "
        f"{cnv:+.0f} MiB) and sends it in a single `apply_async` ({snd:+.0f} MiB: every "
        f"signature is frozen into a message and the GroupResult keeps {lg['n']} "
        f"AsyncResults); `plan_heatmaps` also keeps every InputFile and GradcamJob. At this rate "
        f"100 000 images would add ≈{per_img_kb * 100_000 / 1024**2:.1f} GiB. Independently "
        f"of size, {wid:+.0f} MiB of the producer's ~{sm['peak']:.0f} MiB is TensorFlow: "
        f"`plan.model_weights_id` imports `convatlas.shared.models.efficientnet_lite` only to locate the "
        f"weights file, and that module imports keras at the top"
        + (
            " (checked: `tensorflow` is in sys.modules right after planning)"
            if ph.get("tensorflow_after_plan")
            else ""
        )
        + "."
    )
    explanations = "\n\n".join(ex) + "\n"
    return table, details + "\n" + explanations


# --- main -----------------------------------------------------------------------------------------


def save_raw(path: Path, raw: dict[str, Any]) -> None:
    import dataclasses

    def enc(o: Any) -> Any:
        if dataclasses.is_dataclass(o):  # not asdict(): it rebuilds a Counter from pairs
            return {f.name: enc(getattr(o, f.name)) for f in dataclasses.fields(o)}
        if isinstance(o, dict):
            return {str(k): enc(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [enc(v) for v in o]
        return o

    path.write_text(json.dumps(enc(raw)))


def load_raw(path: Path) -> dict[str, Any]:
    raw = json.loads(path.read_text())

    def pair(d: dict[str, Any]) -> Pair:
        st = d["stack"]
        st["batches"] = [tuple(b) for b in st["batches"]]
        return Pair(
            **{
                **d,
                "stack": StackRun(**st),
                "record_sizes": Counter({int(k): v for k, v in d["record_sizes"].items()}),
            }
        )

    cfg = FULL if raw["cfg"]["name"] == "full" else QUICK
    raw["cfg"] = cfg
    raw["cam"] = [pair(p) for p in raw["cam"]]
    raw["grid"] = [pair(p) for p in raw["grid"]]
    raw["leak"]["rss"] = {int(k): v for k, v in raw["leak"]["rss"].items()}
    raw["prod"] = {(int(k) if k.isdigit() else k): v for k, v in raw["prod"].items()}
    return raw


def write_results(raw: dict[str, Any]) -> None:
    cfg, env = raw["cfg"], raw["env"]
    table, rest = build_report(
        cfg, env, raw["leak"], raw["cam"], raw["grid"], raw["lat"], raw["prod"]
    )
    print()
    print(table)
    print(rest)
    print(f"({cfg.name} run, {raw['minutes']:.1f} min)")
    if cfg.name != "full":
        return
    RESULTS.write_text(
        "# Pipeline benchmark: local stack vs in-process, worker and producer memory\n\n"
        f"Run {env['date']} on {env['nproc']} CPU cores ({env['cpu']}), Python {env['python']}, "
        f"`bench/bench_pipeline.py` ({cfg.name}, {raw['minutes']:.1f} min). The cores were "
        f"shared with other work (load average {env['load']:.1f} at the end), so every speed "
        f"figure is a ratio of two sides measured side by side, alternating, median over "
        f"repeats. The stack is `LocalStack(workers=1)` (default 128 threads) with the default "
        f"50 ms batch window and max batch 64; both sides have their model loaded and traced "
        f"before timing.\n\n" + table + "\n" + rest
    )
    say(f"wrote {RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, smoke check; no write")
    ap.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="raw measurements file (default: $TMPDIR/bench-pipeline-raw-{full,quick}.json)",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the table and RESULTS-pipeline.md from --raw, measuring nothing",
    )
    ap.add_argument("--_phases", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._phases:
        phases_child(*args._phases)
        return
    cfg = QUICK if args.quick else FULL
    args.raw = args.raw or Path(tempfile.gettempdir()) / f"bench-pipeline-raw-{cfg.name}.json"
    if args.report_only:
        write_results(load_raw(args.raw))
        return

    import warnings

    warnings.filterwarnings("ignore")
    from convatlas.shared.models.registry import get_model
    from convatlas.stack.supervisor import LocalStack

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    stack = LocalStack(tmp / "stack", workers=1)  # the default: 2 × max batch threads
    env = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }
    t_all = time.perf_counter()
    try:
        say(f"starting the stack in {stack.dir}")
        stack.start()
        fleet = Fleet(stack)
        say(f"stack up, worker pid {fleet.worker_pid}; loading models in this process")
        get_model(CAM_MODEL)
        get_model(GRID_MODEL)
        leak = section_leak(cfg, fleet)
        lat = s3_latency(fleet, cfg.s3_ops)
        say(f"S3 latency ms: {lat}")
        cam = section_cam(cfg, fleet, tmp)
        grid = section_grid(cfg, fleet, tmp)
        prod = section_producer(cfg, fleet, tmp)
    finally:
        say("stopping the stack")
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    env["load"] = os.getloadavg()[0]
    raw = {
        "cfg": {"name": cfg.name},
        "env": env,
        "leak": leak,
        "cam": cam,
        "grid": grid,
        "lat": lat,
        "prod": prod,
        "minutes": (time.perf_counter() - t_all) / 60,
    }
    save_raw(args.raw, raw)
    say(f"raw measurements in {args.raw}")
    write_results(load_raw(args.raw))


if __name__ == "__main__":
    main()
