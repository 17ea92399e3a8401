"""Celery tasks: thin wrappers over ``convatlas.shared.jobs`` and ``convatlas.workers.batcher``.

Contract (so every job reaches an outcome that completion can count): a task never raises except to retry.
It returns a small JSON dict ``{"status", "outputs", "error", "batch"}`` where status is

* ``done``: computed now; ``skipped``: already in storage;
* ``failed``: a permanent bad-input failure, recorded by ``convatlas.shared.jobs`` as ``error.json``;
* ``failed`` too for a job that keeps raising (a poison job: e.g. a class index its model does
  not have): after ``POISON_RETRIES`` retries the error is recorded as its ``error.json``, so
  the run completes and reports it instead of waiting for it forever;
* ``error``: not recorded (a job that cannot even be parsed, storage unreachable or the batch
  not done after every retry): the job stays pending in the run report and is queued again by
  the next submission.

The Celery state is SUCCESS in all four cases; the run report, built from storage markers, is
the source of truth. ``StorageUnavailable``, and a wait for the batch longer than
``CONVATLAS_TASK_TIME_LIMIT`` (the threads pool enforces no time limit itself), are retried
with exponential backoff.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task

from convatlas.shared.config import Settings
from convatlas.shared.jobs import (
    JobResult,
    grid_from_dict,
    job_from_dict,
    record_failure,
)
from convatlas.shared.storage import StorageUnavailable
from convatlas.workers.app import TASK_NAMES, app
from convatlas.workers.batcher import Batcher, process_batcher
from convatlas.workers.completion import count_outcome, run_progress
from convatlas.workers.resources import worker_storage

log = logging.getLogger(__name__)

MAX_RETRIES = 6
POISON_RETRIES = 2  # a job that raises is tried 1 + 2 times, then recorded as failed
RETRY_BASE_S = 2.0
RETRY_CAP_S = 120.0

def batcher() -> Batcher:
    s = Settings.from_env()
    return process_batcher(worker_storage, s.batch_window_ms, s.max_batch)


def backoff(retries: int) -> float:
    """2, 4, 8 … s (capped), with jitter so retries from one outage do not arrive together."""
    return min(RETRY_CAP_S, RETRY_BASE_S * 2**retries) * random.uniform(0.75, 1.25)


def _summary(res: JobResult) -> dict[str, Any]:
    return {
        "status": res.status,
        "outputs": res.outputs,
        "error": res.error,
        "batch": res.info.get("batch"),
    }


def _error(message: str) -> dict[str, Any]:
    return {"status": "error", "outputs": {}, "error": message, "batch": None}


def _retry_or_error(task: Task, exc: Exception, what: str) -> dict[str, Any]:
    """Raise ``Retry`` while retries are left; then report the problem without raising."""
    if task.request.retries < MAX_RETRIES:
        raise task.retry(exc=exc, countdown=backoff(task.request.retries), max_retries=MAX_RETRIES)
    log.error("%s: %s after %d retries: %s", task.name, what, MAX_RETRIES, exc)
    return _error(f"{what} after {MAX_RETRIES} retries: {exc}")


def _run_job(task: Task, job_dict: dict[str, Any], run: dict[str, Any] | None) -> dict[str, Any]:
    """The job's outcome, counted for its run (``completion``) once it is in storage."""
    out = _outcome(task, job_dict)
    if out["status"] in ("done", "skipped", "failed"):
        try:
            count_outcome(app, run)
        except Exception as exc:  # Redis away: the healer recounts from storage later
            log.warning("could not count the outcome for run %s: %s", (run or {}).get("id"), exc)
    return out


def _outcome(task: Task, job_dict: dict[str, Any]) -> dict[str, Any]:
    try:
        job = job_from_dict(job_dict)
    except (TypeError, ValueError, KeyError) as exc:
        return _error(f"invalid job: {exc}")
    try:
        # the batcher's prepare stage is the job's one "already done?" check
        res = batcher().run(job, timeout=Settings.from_env().task_time_limit)
        return _summary(res)
    except StorageUnavailable as exc:
        return _retry_or_error(task, exc, "storage unavailable")
    except TimeoutError as exc:  # the batcher is behind; the job stays queued there
        return _retry_or_error(task, exc, "timed out waiting for its batch")
    except Exception as exc:  # a poison job or a bug: bounded retries, then a recorded failure
        log.exception("%s failed for %s", task.name, job.marker)
        if task.request.retries < POISON_RETRIES:
            raise task.retry(exc=exc, countdown=backoff(task.request.retries),
                             max_retries=MAX_RETRIES) from exc
        reason = f"{type(exc).__name__}: {exc} (after {POISON_RETRIES} retries)"
        try:
            return _summary(record_failure(job, worker_storage(), reason))
        except StorageUnavailable:
            return _error(reason)


@app.task(name=TASK_NAMES["filter"], bind=True, max_retries=MAX_RETRIES)
def filter_pattern(self: Task, job_dict: dict[str, Any],
                   run: dict[str, Any] | None = None) -> dict[str, Any]:
    """One filter's pattern (batched with the other filters this worker is running)."""
    return _run_job(self, job_dict, run)


@app.task(name=TASK_NAMES["gradcam"], bind=True, max_retries=MAX_RETRIES)
def gradcam(self: Task, job_dict: dict[str, Any],
            run: dict[str, Any] | None = None) -> dict[str, Any]:
    """One photo's Grad-CAM; the photo is read from storage by its hash, never sent here."""
    return _run_job(self, job_dict, run)


@app.task(name=TASK_NAMES["reduce"], bind=True, max_retries=MAX_RETRIES)
def reduce_grid(self: Task, run_id: str, page: int) -> dict[str, Any]:
    """Assemble page ``page`` of a run from the tiles in storage (queued by the marker that
    completed the page; failed or missing tiles are found in storage and left black)."""
    from convatlas.shared.jobs import reduce_grid as reduce
    from convatlas.shared.report import load_manifest

    try:
        grid = grid_from_dict(load_manifest(worker_storage(), run_id)["grids"][page])
        res = reduce(grid, worker_storage())
        return {**_summary(res), "missing": res.info.get("missing", [])}
    except StorageUnavailable as exc:
        return _retry_or_error(self, exc, "storage unavailable")
    except Exception as exc:
        log.exception("reduce_grid failed")
        return _error(f"{type(exc).__name__}: {exc}")


@app.task(name=TASK_NAMES["finish"], bind=True, max_retries=MAX_RETRIES)
def finish_run(self: Task, run_id: str) -> dict[str, Any]:
    """Queued by the marker that completed the run: build any page still unbuilt (its reducer
    may have been lost), write the report and a gallery with presigned links, then drop the
    run's progress state."""
    from convatlas.shared.report import finish_run as finish

    storage = worker_storage()
    expiry = Settings.from_env().presign_expiry
    try:
        progress = run_progress(run_id)
        snap = progress.snapshot() if progress is not None else None
        healing = None if snap is None else {"requeued": snap.requeued,
                                             "duplicates": snap.duplicates}
        report = finish(storage, run_id, lambda key: storage.url(key, expiry), healing)
        if progress is not None and report["complete"]:
            progress.clear()
        if report["complete"] and report["kind"] == "examples":
            # the run's one completion queues its reduce (not every map that sees the run done:
            # a batch of maps finishing together queued it 3 times over, each redoing the merge)
            app.send_task(TASK_NAMES["examples-reduce"], args=(run_id,))
        return {"status": "done", "run_id": run_id, "counts": report["counts"],
                "complete": report["complete"]}
    except StorageUnavailable as exc:
        return _retry_or_error(self, exc, "storage unavailable")
    except Exception as exc:
        log.exception("finish_run failed for %s", run_id)
        return _error(f"{type(exc).__name__}: {exc}")


# --- dataset examples ----------------------------------------------------------------------------


@app.task(name=TASK_NAMES["examples"], bind=True, max_retries=MAX_RETRIES)
def examples(self: Task, job_dict: dict[str, Any],
             run: dict[str, Any] | None = None) -> dict[str, Any]:
    """One batch of photos through the trunk (``convatlas.shared.jobs.examples_map``); the run's
    ``finish_run`` (queued once, by the outcome that completes the run) queues its reduce."""
    return _run_job(self, job_dict, run)


@app.task(name=TASK_NAMES["examples-reduce"], bind=True, max_retries=MAX_RETRIES)
def reduce_examples(self: Task, run_id: str) -> dict[str, Any]:
    """Merge every layer of an examples run, render what changed, write its summary."""
    from convatlas.shared.jobs.examples_reduce import reduce_run

    try:
        summary = reduce_run(worker_storage(), run_id)
        return {"status": "done", "run_id": run_id,
                "layers": {r["layer"]: r["status"] for r in summary["layers"]}}
    except StorageUnavailable as exc:
        return _retry_or_error(self, exc, "storage unavailable")
    except Exception as exc:
        log.exception("reduce_examples failed for %s", run_id)
        return _error(f"{type(exc).__name__}: {exc}")


# --- the atlas -------------------------------------------------------------------------------


@app.task(name=TASK_NAMES["atlas"], bind=True, max_retries=MAX_RETRIES)
def build_atlas(self: Task, model: str) -> dict[str, Any]:
    """A model's atlas site from the bucket's results into the bucket (``atlas/<model>/``);
    the summary written last (``shared.atlas.summary_key``) is what the producer waits for."""
    from convatlas.shared.atlas import build_into_storage

    try:
        summary = build_into_storage(worker_storage(), model)
        return {"status": "done", "model": model, "units": summary.units,
                "photos": summary.photos, "files": summary.files}
    except StorageUnavailable as exc:
        return _retry_or_error(self, exc, "storage unavailable")
    except Exception as exc:
        log.exception("build_atlas failed for %s", model)
        message = f"{type(exc).__name__}: {exc}"
        try:  # the producer waiting for the summary learns why instead of timing out
            _write_atlas_failure(model, message)
        except Exception:
            log.warning("build_atlas: could not record the failure of %s", model)
        return _error(message)


def _write_atlas_failure(model: str, message: str) -> None:
    import json

    from convatlas.shared.atlas import summary_key

    worker_storage().put_bytes(summary_key(model), json.dumps({"error": message}).encode(),
                               "application/json")
