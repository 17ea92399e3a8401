"""Celery tasks: thin wrappers over ``convatlas.shared.jobs`` and ``convatlas.workers.batcher``.

Contract (so every job reaches an outcome that completion can count): a task never raises except to retry.
It returns a small JSON dict ``{"status", "outputs", "error", "batch"}`` where status is

* ``done``: computed now; ``skipped``: already in storage;
* ``failed``: a permanent bad-input failure, recorded by ``convatlas.shared.jobs`` as ``error.json``;
* ``failed`` too for a job that keeps raising (a poison job: e.g. a class index its model does
  not have): after ``POISON_RETRIES`` retries the error is recorded as its ``error.json``, so
  the run completes and reports it instead of waiting for it forever;
* ``failed`` too for a job whose worker died under it ``CONVATLAS_WORKER_LOST_ATTEMPTS`` times
  (it exceeds memory alone: ``convatlas.workers.memory_guard``), instead of looping;
* ``error``: not recorded (a job that cannot even be parsed, storage unreachable or the batch
  not done after every retry): the job stays pending in the run report and is queued again by
  the next submission.

The Celery state is SUCCESS in all four cases; the run report, built from storage markers, is
the source of truth. ``StorageUnavailable``, and a wait for the batch longer than
``CONVATLAS_TASK_TIME_LIMIT`` (the threads pool enforces no time limit itself), are retried
with exponential backoff.

One base class, ``FleetTask`` (Celery's ``base=``), owns that contract for every task. The tasks
of the job kinds and of their post-run steps are generated from ``KINDS``, under the kinds' task
names; kinds defined outside the package register themselves in modules named by
``CONVATLAS_KIND_MODULES`` (comma-separated), imported here before the tasks are made.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
from typing import Any

from celery import Task
from celery.exceptions import TaskPredicate

from convatlas.shared.config import Settings
from convatlas.shared.jobs import (
    JobResult,
    existing_result,
    grid_from_dict,
    job_from_dict,
    record_failure,
)
from convatlas.shared.jobs.kinds import KINDS, JobKind, RunStep, post_run_step
from convatlas.shared.storage import ClockSkewed, StorageUnavailable
from convatlas.workers.app import TASK_NAMES, app
from convatlas.workers.batcher import Batcher, process_batcher
from convatlas.workers.clock_guard import alarm as clock_alarm
from convatlas.workers.completion import client, count_or_defer, run_progress
from convatlas.workers.memory_guard import attempt
from convatlas.workers.resources import worker_storage

log = logging.getLogger(__name__)

MAX_RETRIES = 6
POISON_RETRIES = 2  # a job that raises is tried 1 + 2 times, then recorded as failed
RETRY_BASE_S = 2.0
RETRY_CAP_S = 120.0
KIND_MODULES_ENV = "CONVATLAS_KIND_MODULES"


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


class FleetTask(Task):
    """The contract above, in one place: ``StorageUnavailable`` is retried with backoff, then
    reported as an ``error``; any other exception is logged and reported as an ``error``
    (``on_error`` may record it first). Celery's own retry signal passes through."""

    max_retries = MAX_RETRIES

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except TaskPredicate:  # Retry (and Ignore/Reject): Celery's control flow, not a failure
            raise
        except StorageUnavailable as exc:
            return self.retry_or_error(exc, "storage unavailable")
        except Exception as exc:
            log.exception("%s failed for %s", self.name, ", ".join(map(repr, args)))
            message = f"{type(exc).__name__}: {exc}"
            self.on_error(message, *args, **kwargs)
            return _error(message)

    def retry_or_error(self, exc: Exception, what: str) -> dict[str, Any]:
        """Raise ``Retry`` while retries are left; then report the problem without raising.
        A clock off S3's is this worker's fault: retried at once, with no ETA (it would carry
        the wrong clock), for a worker with a right clock (``workers.clock_guard``)."""
        if self.request.retries < MAX_RETRIES:
            skewed = isinstance(exc, ClockSkewed)
            if skewed:
                clock_alarm()
            raise self.retry(exc=exc, countdown=0 if skewed else backoff(self.request.retries),
                             max_retries=MAX_RETRIES)
        log.error("%s: %s after %d retries: %s", self.name, what, MAX_RETRIES, exc)
        return _error(f"{what} after {MAX_RETRIES} retries: {exc}")

    def on_error(self, message: str, *args: Any, **kwargs: Any) -> None:
        """A hook, called with the error a task is about to report and its arguments; must not
        raise."""


def task(name: str, base: type[Task] = FleetTask) -> Any:
    """``app.task`` for a convatlas task: bound, under ``base``'s contract."""
    return app.task(name=name, base=base, bind=True)


# --- jobs of every kind ----------------------------------------------------------------------


def run_job(task: FleetTask, job_dict: dict[str, Any], run: dict[str, Any] | None) -> dict[str, Any]:
    """The job's outcome, counted for its run (``completion``) once it is in storage."""
    out = _outcome(task, job_dict)
    if out["status"] in ("done", "skipped", "failed"):
        count_or_defer(app, run)  # Redis away: counted once it answers again
    return out


def _outcome(task: FleetTask, job_dict: dict[str, Any]) -> dict[str, Any]:
    try:
        job = job_from_dict(job_dict)
    except (TypeError, ValueError, KeyError) as exc:
        return _error(f"invalid job: {exc}")
    with attempt(client(), job.marker) as lost:  # a job that keeps killing its worker
        if lost is not None:
            done = existing_result(job, worker_storage())  # it ended, its ack was lost
            if done is not None:
                return _summary(done)
            log.error("%s failed for good: %s", job.marker, lost)
            return _recorded_failure(job, lost)
        return _run(task, job)


def _recorded_failure(job: Any, reason: str) -> dict[str, Any]:
    try:
        return _summary(record_failure(job, worker_storage(), reason))
    except StorageUnavailable:
        return _error(reason)


def _run(task: FleetTask, job: Any) -> dict[str, Any]:
    try:
        # the batcher's prepare stage is the job's one "already done?" check
        res = batcher().run(job, timeout=Settings.from_env().task_time_limit)
        return _summary(res)
    except StorageUnavailable as exc:
        return task.retry_or_error(exc, "storage unavailable")
    except TimeoutError as exc:  # the batcher is behind; the job stays queued there
        return task.retry_or_error(exc, "timed out waiting for its batch")
    except Exception as exc:  # a poison job or a bug: bounded retries, then a recorded failure
        log.exception("%s failed for %s", task.name, job.marker)
        if task.request.retries < POISON_RETRIES:
            raise task.retry(exc=exc, countdown=backoff(task.request.retries),
                             max_retries=MAX_RETRIES) from exc
        return _recorded_failure(
            job, f"{type(exc).__name__}: {exc} (after {POISON_RETRIES} retries)")


def job_task(kind: JobKind) -> Any:
    """The task of one job of ``kind`` (batched with the other jobs this worker is running;
    a photo is read from storage by its hash, never sent here)."""

    def one_job(self: FleetTask, job_dict: dict[str, Any],
                run: dict[str, Any] | None = None) -> dict[str, Any]:
        return run_job(self, job_dict, run)

    # a Python identifier: Celery compiles a signature under this name ("report-card" is not)
    one_job.__name__ = one_job.__qualname__ = f"{kind.name}_job".replace("-", "_")
    one_job.__doc__ = f"One {kind.name} job (``{kind.job_class.__module__}``)."
    return task(kind.task)(one_job)


def step_task(kind: JobKind, step: RunStep) -> Any:
    """The task of ``kind``'s post-run step, queued once by the run's ``finish_run``."""

    def post_run(self: FleetTask, run_id: str) -> dict[str, Any]:
        summary = step.run(worker_storage(), run_id)
        return {"status": "done", "run_id": run_id, **step.task_result(summary)}

    post_run.__name__ = post_run.__qualname__ = f"{kind.name}_{step.name}".replace("-", "_")
    post_run.__doc__ = f"The {step.name} of a {kind.name} run, once its every job has an outcome."
    return task(step.task)(post_run)


def import_kind_modules() -> list[str]:
    """Import the modules named in ``CONVATLAS_KIND_MODULES``: each registers its kinds."""
    names = [m.strip() for m in os.environ.get(KIND_MODULES_ENV, "").split(",") if m.strip()]
    for name in names:
        importlib.import_module(name)
    return names


import_kind_modules()
JOB_TASKS = {name: job_task(kind) for name, kind in KINDS.items()}
STEP_TASKS = {name: step_task(kind, kind.post_run) for name, kind in KINDS.items() if kind.post_run}


# --- the run -----------------------------------------------------------------------------------


@task(TASK_NAMES["reduce"])
def reduce_grid(self: FleetTask, run_id: str, page: int) -> dict[str, Any]:
    """Assemble page ``page`` of a run from the tiles in storage (queued by the marker that
    completed the page; failed or missing tiles are found in storage and left black)."""
    from convatlas.shared.jobs import reduce_grid as reduce
    from convatlas.shared.report import load_manifest

    grid = grid_from_dict(load_manifest(worker_storage(), run_id)["grids"][page])
    res = reduce(grid, worker_storage())
    return {**_summary(res), "missing": res.info.get("missing", [])}


@task(TASK_NAMES["finish"])
def finish_run(self: FleetTask, run_id: str) -> dict[str, Any]:
    """Queued by the marker that completed the run: build any page still unbuilt (its reducer
    may have been lost), write the report and a gallery with presigned links, then drop the
    run's progress state; a complete run's post-run step (its kind's, ``KINDS``) is queued."""
    from convatlas.shared.report import finish_run as finish

    storage = worker_storage()
    expiry = Settings.from_env().presign_expiry
    progress = run_progress(run_id)
    snap = progress.snapshot() if progress is not None else None
    healing = None if snap is None else {"requeued": snap.requeued, "duplicates": snap.duplicates}
    report = finish(storage, run_id, lambda key: storage.url(key, expiry), healing)
    if progress is not None and report["complete"]:
        progress.clear()
    step = post_run_step(report["kind"])
    if report["complete"] and step is not None:
        # the run's one completion queues its step (not every job that sees the run done: a
        # batch of examples maps finishing together queued the reduce 3 times over)
        app.send_task(step.task, args=(run_id,))
    return {"status": "done", "run_id": run_id, "counts": report["counts"],
            "complete": report["complete"]}


# --- the atlas -------------------------------------------------------------------------------


class AtlasTask(FleetTask):
    def on_error(self, message: str, *args: Any, **kwargs: Any) -> None:
        """The producer waiting for the summary learns why instead of timing out."""
        model = str(args[0] if args else kwargs.get("model"))
        try:
            from convatlas.shared.atlas import summary_key

            worker_storage().put_bytes(summary_key(model), json.dumps({"error": message}).encode(),
                                       "application/json")
        except Exception:
            log.warning("build_atlas: could not record the failure of %s", model)


@task(TASK_NAMES["atlas"], base=AtlasTask)
def build_atlas(self: FleetTask, model: str) -> dict[str, Any]:
    """A model's atlas site from the bucket's results into the bucket (``atlas/<model>/``);
    the summary written last (``shared.atlas.summary_key``) is what the producer waits for."""
    from convatlas.shared.atlas import build_into_storage

    summary = build_into_storage(worker_storage(), model)
    return {"status": "done", "model": model, "units": summary.units,
            "photos": summary.photos, "files": summary.files}
