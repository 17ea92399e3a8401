"""The fleet section of ``bench/bench_examples.py``: ``convatlas submit examples FOLDER --model M
--layers L --wait`` on a real fleet, measured from outside.

The fleet is ``convatlas.stack.harness.Fleet`` (as in ``bench/bench_pipeline.py`` and
``tests/integration/test_examples_fleet.py``) on its own ``RedisServer`` and ``SeaweedS3Server``
(``convatlas.stack.servers``: free loopback ports, stopped and removed at the end), with one
``convatlas worker`` at ``bench_pipeline.py``'s settings for a single worker on this host:
128 task threads, max batch 64, 50 ms batch window, visibility timeout 3600 s and
``CONVATLAS_TF_THREADS`` unset (the harness drops every ``CONVATLAS_`` variable of this
process; TensorFlow then takes every core, as ``convatlas stack up`` leaves a single worker).

1. **Warm-up**: other photos (``warm``) planned with k = 1 (another examples prefix, so nothing
   of it is merged into the measured run's layers), uploaded, and their map tasks sent without a
   run (no reduce, no report): the worker loads the model and traces the trunk for the same
   layers and batch size. Its RSS is read, then its peak is reset.
2. **The run**: the CLI in a subprocess, exactly as a user runs it (``python -m
   convatlas.producer.fleet_cli submit examples FOLDER --model M --layers L --wait``), while this
   process polls storage (one HEAD per 0.25 s) for the run's report and its examples summary.
3. **Afterwards**: the report (counts, failed photos), every map record (photos, model and decode
   seconds), the map markers' ``LastModified`` (first / last map outcome), the worker log's
   batch lines (model seconds, batch sizes), the worker's peak RSS (``VmHWM``) and CPU seconds
   of every process involved (``/proc``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from measure import (
    REPO,
    children_cpu,
    machine_busy,
    parse_batches,
    process_cpu,
    reset_peak,
    say,
    status_mb,
)

#: the worker as bench_pipeline.py runs a single one on this host (the user's defaults)
CONCURRENCY = 128
WORKER_ENV = {"CONVATLAS_BATCH_WINDOW_MS": "50", "CONVATLAS_MAX_BATCH": "64"}
POLL_S = 0.25


def cpu_of(pid: int | None) -> float:
    """CPU seconds of one process and its waited-for children (the worker exec'd celery)."""
    return process_cpu(pid, waited_children=True)


# --- warm-up --------------------------------------------------------------------------------------


def warm_up(fleet: Any, folder: Path, model: str, layers: str, timeout: float = 900) -> dict[str, Any]:
    """Map ``folder`` with k = 1 (its own prefix) through the worker, without a run."""
    from convatlas.producer.plans.examples import plan_examples
    from convatlas.producer.staging import upload_inputs
    from convatlas.producer.submit import stop_listening
    from convatlas.shared.jobs import TASK_NAMES

    t0 = time.perf_counter()
    plan = plan_examples([str(folder)], model, layers, 1, fleet.settings, fleet.storage, batch=32)
    upload_inputs(plan, fleet.storage)
    for job in plan.jobs:
        fleet.app.send_task(TASK_NAMES["examples"], args=(job.to_dict(), None))
    stop_listening(fleet.app)
    todo = {j.marker for j in plan.jobs}
    deadline = time.monotonic() + timeout
    while todo:
        todo = {k for k in todo if not fleet.storage.exists(k)}
        if fleet.worker is None or fleet.worker.poll() is not None:
            raise RuntimeError("worker died during the warm-up:\n" + fleet.log()[-3000:])
        if time.monotonic() > deadline:
            raise TimeoutError(f"warm-up: {len(todo)} map jobs without a marker after {timeout:.0f} s")
        time.sleep(0.2)
    return {"photos": len(plan.inputs), "jobs": len(plan.jobs), "seconds": time.perf_counter() - t0}


# --- the measured run -----------------------------------------------------------------------------


def preupload(fleet: Any, folder: Path) -> dict[str, Any]:
    """Every photo of ``folder`` into the bucket before the clock starts (``--fleet-preupload``)."""
    from convatlas.producer.plans.inputs import hash_inputs
    from convatlas.producer.staging import upload_inputs

    t0 = time.perf_counter()
    inputs, _ = hash_inputs([str(folder)])
    n = upload_inputs(inputs, fleet.storage)
    return {"photos": n, "seconds": time.perf_counter() - t0}


def run_cli(fleet: Any, folder: Path, model: str, layers: str, timeout: float,
            s3_pid: int | None, redis_pid: int | None) -> dict[str, Any]:
    """``convatlas submit examples FOLDER --model M --layers L --wait`` as a user runs it."""
    from convatlas.shared.jobs.examples_reduce import summary_key
    from convatlas.shared.report import report_key

    assert fleet.worker is not None
    wpid = int(fleet.worker.pid)
    out_path, err_path = fleet.dir / "submit.out", fleet.dir / "submit.err"
    argv = [sys.executable, "-m", "convatlas.producer.fleet_cli", "submit", "examples", str(folder),
            "--model", model, "--layers", layers, "--wait", "--timeout", str(int(timeout))]
    log_off = len(fleet.log())
    cpu0 = {"worker": cpu_of(wpid), "weed": cpu_of(s3_pid),
            "redis": cpu_of(redis_pid), "cli": children_cpu(), "machine": machine_busy()}
    marks: dict[str, float] = {}
    run_id = None
    t_epoch = time.time()
    t0 = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=fleet.env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
    try:
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if fleet.worker.poll() is not None:
                raise RuntimeError("worker died:\n" + fleet.log()[-3000:])
            if now > timeout + 120:
                raise TimeoutError(f"submit examples still running after {now:.0f} s")
            if run_id is None:
                m = re.search(r"^run (\S+): ", out_path.read_text(errors="replace"), re.M)
                if m:
                    run_id, marks["submitted"] = m.group(1), now
            if run_id is not None:
                if "report" not in marks and fleet.storage.exists(report_key(run_id)):
                    marks["report"] = now
                if "summary" not in marks and fleet.storage.exists(summary_key(run_id)):
                    marks["summary"] = now
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    t_end = time.time()
    cpu = {"worker": cpu_of(wpid) - cpu0["worker"], "weed": cpu_of(s3_pid) - cpu0["weed"],
           "redis": cpu_of(redis_pid) - cpu0["redis"], "cli": children_cpu() - cpu0["cli"],
           "machine": machine_busy() - cpu0["machine"]}
    stdout = out_path.read_text(errors="replace")
    if run_id is None:
        m = re.search(r"^run (\S+): ", stdout, re.M)
        run_id = m.group(1) if m else None
    if proc.returncode != 0 or run_id is None:
        say(f"submit examples exited {proc.returncode}:\n{stdout[-2000:]}\n"
            f"{err_path.read_text(errors='replace')[-2000:]}")
    marks.setdefault("report", wall)  # seen only at the end: the last poll
    marks.setdefault("summary", wall)
    r: dict[str, Any] = {"argv": ["convatlas", *argv[3:]], "returncode": proc.returncode,
                         "run_id": run_id, "wall": wall, "marks": marks, "cpu": cpu,
                         "t_start": t_epoch, "t_end": t_end,
                         "stdout_tail": stdout.strip().splitlines()[-8:]}
    time.sleep(0.3)  # the worker's last log lines
    batches = [b for b in parse_batches(fleet.log()[log_off:])
               if "examples" in b["kinds"] and t_epoch - 1 <= b["end"] <= t_end + 1]
    r["batches"] = batches
    if run_id is not None and fleet.storage.exists(report_key(run_id)):
        r.update(read_outcomes(fleet, run_id, t_epoch))
    if batches:
        first = min(b["end"] - b["model"] for b in batches)
        last = max(b["end"] for b in batches)
        r["log"] = {"first_batch_start": first - t_epoch, "last_batch_end": last - t_epoch,
                    "model_seconds": sum(b["model"] for b in batches),
                    "sizes": [b["n"] for b in sorted(batches, key=lambda b: b["end"])]}
    return r


def read_outcomes(fleet: Any, run_id: str, t_epoch: float) -> dict[str, Any]:
    """The report, every map record and the map markers' ``LastModified``."""
    from convatlas.shared.jobs.common import io_map, read_json
    from convatlas.shared.jobs.examples_reduce import summary_key
    from convatlas.shared.report import report_key

    st = fleet.storage
    report = json.loads(st.get_bytes(report_key(run_id)))
    summary = read_json(st, summary_key(run_id)) or {"layers": []}  # absent: --wait timed out
    markers = [j["outputs"]["record"] for j in report["jobs"] if j["status"] == "done"]
    records = [json.loads(b) for b in io_map(st.get_bytes, markers)]
    failed = [f for j in report["jobs"] for f in j.get("failed_photos") or []]
    want = {f"{st.prefix}/{k}" for k in markers}
    stamps = []
    for folder in sorted({k.rsplit("/", 1)[0] + "/" for k in markers}):
        pages = st.client.get_paginator("list_objects_v2").paginate(
            Bucket=st.bucket, Prefix=f"{st.prefix}/{folder}")
        stamps += [o["LastModified"].timestamp() for p in pages for o in p.get("Contents", [])
                   if o["Key"] in want]
    return {
        "counts": report["counts"],
        "photos": sum(r["photos"] for r in records),
        "jobs": len(report["jobs"]),
        "model_seconds": sum(r.get("seconds", 0.0) for r in records),
        "decode_seconds_sum": sum(r.get("decode_seconds", 0.0) for r in records),
        "failed": len(failed),
        "failed_reasons": dict(Counter(f["error"] for f in failed).most_common(5)),
        "first_map_outcome": min(stamps) - t_epoch if stamps else None,
        "last_map_outcome": max(stamps) - t_epoch if stamps else None,
        "layers": [{k: row.get(k) for k in ("layer", "status", "photos", "merged_batches",
                                             "rendered_pages", "render_seconds")}
                   for row in summary["layers"]],
        "render_seconds": sum(row.get("render_seconds") or 0.0 for row in summary["layers"]),
    }


# --- the section ----------------------------------------------------------------------------------


def fleet_section(folder: Path, warm: Path, model: str, layers: str, work: Path,
                  timeout: float = 7200, preupload_photos: bool = False) -> dict[str, Any]:
    """Servers, a worker, the warm-up, the measured run; everything stopped and removed after."""
    from convatlas.stack.harness import Fleet
    from convatlas.stack.servers import RedisServer, SeaweedS3Server

    tmp = work / f"fleet-{os.getpid()}-{int(time.time())}"
    redis = RedisServer(tmp / "redis", password=secrets.token_urlsafe(18))
    s3 = SeaweedS3Server(tmp / "seaweedfs")
    fleet = None
    try:
        say(f"fleet: starting Redis and SeaweedFS in {tmp}")
        redis.start()
        s3.start()
        fleet = Fleet.create(redis, s3, tmp / "fleet", visibility_timeout=3600,
                             concurrency=CONCURRENCY, extra_env=dict(WORKER_ENV))
        (tmp / "fleet").mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        fleet.start_worker()
        assert fleet.worker is not None
        pid = int(fleet.worker.pid)
        start_s = time.perf_counter() - t
        say(f"fleet: worker pid {pid} ready in {start_s:.1f} s; warming up on {warm}")
        w = warm_up(fleet, warm, model, layers)
        time.sleep(1.0)
        rss_model = status_mb(pid, "VmRSS")
        say(f"fleet: warm-up {w['photos']} photos in {w['seconds']:.1f} s; worker RSS {rss_model:.0f} MiB")
        pre = preupload(fleet, folder) if preupload_photos else None
        if pre:
            say(f"fleet: {pre['photos']} photos uploaded before the clock in {pre['seconds']:.1f} s")
        reset = reset_peak(pid)
        say("fleet: submit examples --wait")
        r = run_cli(fleet, folder, model, layers, timeout, s3.pid, redis.pid)
        r.update(worker_start_seconds=start_s, warm=w, rss_model_loaded_mb=rss_model,
                 peak_mb=status_mb(pid, "VmHWM"), peak_reset=reset, preupload=pre,
                 concurrency=CONCURRENCY, worker_env={**WORKER_ENV, "CONVATLAS_TF_THREADS": "unset"})
        if "counts" not in r:  # no report: nothing to measure
            raise RuntimeError(f"submit examples exited {r['returncode']}: {r['stdout_tail']}")
        return r
    finally:
        say("fleet: stopping the worker and the servers")
        if fleet is not None:
            fleet.close()
        s3.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
