"""Fleet mode, producer side: upload inputs, write the manifest, queue only what is missing.

The canvas of a run is ``chord([chord(tiles_of_page, reduce_grid) ..., gradcam ...],
finish_run)``: one chord per grid page (its missing tiles, then the page is assembled), and one
run-level callback that writes the report. Tasks are sent by name with JSON arguments (job
descriptions and keys, never image bytes), so this module imports neither ``convatlas.workers.tasks`` nor
TensorFlow. A submission whose results all exist queues nothing and writes the report directly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery, chord
from celery.canvas import Signature

from convatlas.producer.plan import Plan
from convatlas.producer.staging import upload_inputs, write_manifest
from convatlas.shared import keys
from convatlas.shared.jobs import TASK_NAMES, GridJob, Job, job_from_dict
from convatlas.shared.report import (
    build_report,
    load_manifest,
    manifest_key,
    report_key,
    write_report,
)
from convatlas.shared.storage import ObjectNotFound, Storage, StorageUnavailable


@dataclass
class SubmitResult:
    run_id: str
    queued_jobs: int  # filter and Grad-CAM tasks queued
    queued_tasks: int  # all tasks, reducers and the run callback included
    already_done: int  # jobs with a result (done or failed for good) before this submission
    uploaded: int  # input photos uploaded now
    task_id: str | None = None  # id of the run callback, None when nothing was queued


# --- outcomes ------------------------------------------------------------------------------


def outcome_keys(storage: Storage, jobs: list[Job], per_folder_limit: int = 8) -> set[str]:
    """Existing markers and error markers of ``jobs``, from listings instead of a HEAD request
    per job: one listing per pattern folder (layer and parameters); for Grad-CAM, one per photo
    when there are few photos, else one of the folder shared by all photos of that target."""
    by_base: dict[str, set[str]] = {}
    for job in jobs:
        folder, base = job.outcome_folders()
        by_base.setdefault(base, set()).add(folder)
    found: set[str] = set()
    for base, group in sorted(by_base.items()):
        for prefix in [base] if len(group) > per_folder_limit else sorted(group):
            found.update(storage.list_keys(prefix))
    return found


def has_outcome(job: Job, found: set[str]) -> bool:
    return job.marker in found or job.error_key in found


def _grid_needs_reduce(grid: GridJob, storage: Storage, found: set[str], missing: int) -> bool:
    """A page is (re)built when tiles are queued, it was never built, or a tile it lacked has
    arrived since (a tile that failed for good stays black, so it does not count)."""
    if missing or not storage.exists(grid.marker):
        return True
    try:
        info = json.loads(storage.get_bytes(grid.marker))
    except ObjectNotFound:
        return True
    lacking = set(info.get("missing") or [])
    return any(t.marker in found for t in grid.tile_jobs() if t.filter in lacking)


# --- uploads -------------------------------------------------------------------------------


# --- queueing ------------------------------------------------------------------------------


def _sig(app: Celery, kind: str, *args: Any, immutable: bool = True) -> Signature:
    return app.signature(TASK_NAMES[kind], args=args, immutable=immutable)


def build_canvas(plan: Plan, storage: Storage, app: Celery) -> tuple[list[Signature], int, int, int]:
    """(header elements of the run chord, jobs queued, tasks queued, jobs already done)."""
    found = outcome_keys(storage, plan.jobs)
    todo = [j for j in plan.jobs if not has_outcome(j, found)]
    todo_markers = {j.marker for j in todo}
    elements: list[Signature] = []
    tasks = 0
    in_grids: set[str] = set()
    for grid in plan.grids:
        tiles = [t for t in grid.tile_jobs() if t.marker in todo_markers]
        in_grids.update(t.marker for t in grid.tile_jobs())
        if not _grid_needs_reduce(grid, storage, found, len(tiles)):
            continue
        gd = grid.to_dict()
        if tiles:
            header = [_sig(app, "filter", t.to_dict()) for t in tiles]
            elements.append(chord(header, _sig(app, "reduce", gd, immutable=False), app=app))
        else:
            elements.append(_sig(app, "reduce", [], gd))
        tasks += len(tiles) + 1
    for job in todo:
        if job.marker in in_grids:
            continue
        elements.append(_sig(app, job.kind, job.to_dict()))
        tasks += 1
    return elements, len(todo), tasks, len(plan.jobs) - len(todo)


def check_broker(app: Celery) -> None:
    """Fail fast (kombu ``OperationalError``) when the broker is down or refuses the password,
    before any photo is uploaded; Celery would otherwise retry for many seconds."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)


def submit_plan(plan: Plan, storage: Storage, app: Celery) -> SubmitResult:
    """Upload inputs, write the manifest, queue what is missing (or write the report now)."""
    check_broker(app)
    uploaded = upload_inputs(plan, storage)
    write_manifest(plan, storage)
    elements, n_jobs, n_tasks, done = build_canvas(plan, storage, app)
    if not elements:
        write_report(storage, plan.run_id, presigned_links(storage))
        return SubmitResult(plan.run_id, 0, 0, done, uploaded)
    storage.delete(report_key(plan.run_id))  # a stale report must not end wait_for_run early
    body = _sig(app, "finish", plan.run_id, immutable=False)
    task_id = chord(elements, body, app=app).apply_async().id
    stop_listening(app)
    return SubmitResult(plan.run_id, n_jobs, n_tasks + 1, done, uploaded, task_id)


def stop_listening(app: Celery) -> None:
    """Drop the result subscriptions Celery opened for the tasks just sent.

    The producer follows runs through storage, never through task results, but Celery's Redis
    backend subscribes to the result channel of every task and group it sends and unsubscribes
    only when each result object is garbage-collected (unread results pile up meanwhile, and
    a collection after Redis is gone prints a traceback). A later ``.get()`` subscribes again.
    """
    consumer = getattr(app.backend, "result_consumer", None)
    subscribed = getattr(consumer, "subscribed_to", None)
    if consumer is None or not isinstance(subscribed, set):
        return
    subscribed.clear()
    consumer.stop()


def presigned_links(storage: Storage) -> Any:
    """Gallery links that work without credentials, for ``CONVATLAS_PRESIGN_EXPIRY`` s."""
    from convatlas.shared.config import Settings

    expiry = Settings.from_env().presign_expiry
    return lambda key: storage.url(key, expiry)


# --- waiting -------------------------------------------------------------------------------


def run_progress(storage: Storage, manifest: dict[str, Any]) -> tuple[int, int]:
    """(jobs with an outcome, jobs) of a run, from folder listings."""
    jobs = [job_from_dict(d) for d in manifest["jobs"]]
    found = outcome_keys(storage, jobs)
    return sum(has_outcome(j, found) for j in jobs), len(jobs)


def read_report(storage: Storage, run_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(storage.get_bytes(report_key(run_id)))
    except ObjectNotFound:
        return None


def wait_for_run(
    storage: Storage,
    run_id: str,
    timeout: float,
    progress: bool = True,
    poll: float = 1.0,
    grace: float = 30.0,
) -> dict[str, Any]:
    """Block until the run's report is written (by its ``finish_run`` task) and return it.

    The bar counts jobs with an outcome in storage. If every job has one but no report appears
    within ``grace`` seconds (the run callback was lost), the report is built here from storage.
    ``TimeoutError`` after ``timeout`` seconds.
    """
    from tqdm import tqdm

    manifest = load_manifest(storage, run_id)
    deadline = time.monotonic() + timeout
    all_done_since: float | None = None
    with tqdm(total=len(manifest["jobs"]), unit="job", desc=run_id, disable=not progress) as bar:
        while True:
            try:
                report = read_report(storage, run_id)
                done, total = run_progress(storage, manifest)
            except StorageUnavailable:  # S3 down for a while: keep waiting until the deadline
                report, done, total = None, bar.n, len(manifest["jobs"])
            bar.update(done - bar.n)
            if report is not None:
                return report
            now = time.monotonic()
            if done == total and report is None:
                all_done_since = all_done_since or now
                if now - all_done_since > grace:
                    report = build_report(storage, manifest)
                    if report["complete"]:
                        return write_report(storage, run_id, presigned_links(storage))
            if now > deadline:
                raise TimeoutError(f"run {run_id}: {done}/{total} jobs after {timeout:.0f} s")
            time.sleep(poll)


# --- fetching ------------------------------------------------------------------------------


def fetch_run(storage: Storage, run_id: str, dest: Path) -> tuple[int, dict[str, Any]]:
    """Copy a run's outputs, manifest and a fresh report into ``dest`` (same key layout) with
    a gallery that links the local copies. Returns (files written, report)."""
    import os

    from convatlas.shared.report import gallery_html, gallery_key
    from convatlas.shared.storage import LocalStorage

    local = LocalStorage(dest)  # validates every key: nothing lands outside dest
    manifest = load_manifest(storage, run_id)
    report = build_report(storage, manifest)
    wanted: list[str] = [manifest_key(run_id)]
    for d, item in zip(manifest["jobs"], report["jobs"], strict=True):
        if item["status"] == "done":
            wanted.extend(item["outputs"].values())
        elif item["status"] == "failed":
            wanted.append(job_from_dict(d).error_key)
    for g in report["grids"]:
        if g["status"] != "pending":
            wanted.extend([g["png"], g["png"][: -len(".png")] + ".json"])
    n = 0
    for key in dict.fromkeys(wanted):
        try:
            local.put_bytes(key, storage.get_bytes(key))
            n += 1
        except ObjectNotFound:
            continue
    run_dir = Path(dest) / keys.run_prefix(run_id)
    local.put_bytes(report_key(run_id), json.dumps(report, indent=2).encode())
    local.put_bytes(gallery_key(run_id), gallery_html(
        report, lambda k: os.path.relpath(Path(dest) / k, run_dir)).encode())
    return n + 2, report
