"""Fleet mode, producer side: upload inputs, write the manifest, queue only what is missing.

A run is independent tasks, no chord: one per missing job, each counted once in Redis when it
has an outcome; the count completing a page queues its reducer, the one completing the run its
report (``workers.completion``), and the fleet's healer queues again what was lost. Tasks are sent by name with JSON arguments (job
descriptions and keys, never image bytes), so this module imports neither ``convatlas.workers.tasks`` nor
TensorFlow. A submission whose results all exist queues no job and writes the report directly
(then queues its kind's post-run step, if the kind has one: ``KINDS``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from celery import Celery

from convatlas.producer.plans.plan import Plan
from convatlas.producer.plans.spool import SpooledPlan
from convatlas.producer.staging import upload_inputs
from convatlas.shared import keys
from convatlas.shared.config import Settings
from convatlas.shared.jobs import TASK_NAMES, Job, job_from_dict, kind_of, post_run_step
from convatlas.shared.jobs.outcomes import has_outcome, outcome_keys, page_needs_rebuild
from convatlas.shared.manifest import (
    iter_jobs,
    iter_shards,
    job_count,
    shard_key,
    write_header,
    write_shard,
)
from convatlas.shared.progress import RunProgress, Snapshot, progress_client
from convatlas.shared.report import (
    active_key,
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
    queued_tasks: int  # all tasks sent now, reducers of already complete pages included
    already_done: int  # jobs with a result (done or failed for good) before this submission
    uploaded: int  # input photos uploaded now


# --- queueing ------------------------------------------------------------------------------


def check_broker(app: Celery) -> None:
    """Fail fast (kombu ``OperationalError``) when the broker is down or refuses the password,
    before any photo is uploaded; Celery would otherwise retry for many seconds."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)


# Redis's refused writes as redis-py words them (it drops the OOM and READONLY codes)
REFUSALS = ("MISCONF", "unable to persist to disk", "OOM", "maxmemory", "READONLY",
            "read only replica", "NOPERM")


def broker_refused(exc: BaseException) -> bool:
    """The broker answered but refused a command: disk full (``MISCONF``: a failed snapshot
    stops writes), memory full (``OOM``: ``maxmemory`` with ``noeviction``), a read-only
    replica, or this ACL user's rights. Nothing that waiting would fix: fail at once."""
    return any(code in str(exc) for code in REFUSALS)


def run_counter(app: Celery, settings: Settings | None, run_id: str) -> RunProgress:
    s = settings or Settings.from_env()
    tls = app.conf.broker_use_ssl or app.conf.redis_backend_use_ssl or {}
    client = progress_client(replace(
        s, broker_url=s.broker_url or str(app.conf.broker_url or ""),
        result_backend=s.result_backend or str(app.conf.result_backend or ""),
        tls_ca=s.tls_ca or str(tls.get("ssl_ca_certs") or "")))  # the app's, as built
    if client is None:
        raise ValueError("fleet runs count their progress in Redis: set CONVATLAS_PROGRESS_URL "
                         "(or use a Redis broker or result backend)")
    return RunProgress(client, run_id)


def submit_plan(plan: Plan | SpooledPlan, storage: Storage, app: Celery,
                settings: Settings | None = None) -> SubmitResult:
    """Stream a plan to the fleet, shard by shard: upload its photos, write its manifest, queue
    what is missing (or, when nothing is, write the report now).

    No chord: jobs are independent tasks, each counted once when it has an outcome
    (``convatlas.shared.progress``); the count that completes a page queues its reducer and
    the one that completes the run queues ``finish_run``. Jobs already done are counted here.
    One shard of jobs is in memory at a time: a folder of any size costs the same memory.
    """
    check_broker(app)
    progress = run_counter(app, settings, plan.run_id)
    storage.delete(report_key(plan.run_id))  # a stale report must not end wait_for_run early
    progress.start({p: len(g.filters) for p, g in enumerate(plan.grids)})
    header_written = False  # written before the first task (reducers read the pages from it)
    page_of = {t.marker: p for p, g in enumerate(plan.grids) for t in g.tile_jobs()}
    todo_per_page: Counter[int] = Counter()
    complete: set[int] = set()
    uploaded = queued = already = sent = 0
    with app.producer_or_acquire() as producer:
        for n, shard in enumerate(plan.shards()):
            uploaded += upload_inputs(shard.inputs, storage)
            write_shard(storage, plan.run_id, n, shard.to_dict())
            found = outcome_keys(storage, shard.jobs)
            if not header_written and not all(has_outcome(j, found) for j in shard.jobs):
                write_header(storage, plan.header())
                header_written = True
            done: list[tuple[int, int | None]] = []
            todo: list[tuple[int, int | None, Job]] = []
            for k, job in enumerate(shard.jobs):
                i, page = shard.offset + k, page_of.get(job.marker)
                if has_outcome(job, found):
                    done.append((i, page))
                else:
                    todo.append((i, page, job))
            # counted before the shard's tasks go out, so the last tile's worker completes its
            # page (and queues the reducer) rather than this count
            fired = progress.mark_many(done)
            complete |= {p for (_, p), f in zip(done, fired, strict=True) if f.page and p is not None}
            already += len(done)
            for i, page, job in todo:
                app.send_task(kind_of(job).task, args=(job.to_dict(),
                              {"id": plan.run_id, "i": i, "p": page}), producer=producer)
                queued += 1
                if page is not None:
                    todo_per_page[page] += 1
            stop_listening(app)  # Celery subscribes to every sent task's result: not 10^5 of them
        if not header_written:
            write_header(storage, plan.header())
        rebuild = {p for p, g in enumerate(plan.grids)
                   if todo_per_page.get(p, 0) or page_needs_rebuild(g, storage)}
        if not queued and not rebuild:
            progress.clear()
            write_report(storage, plan.run_id, presigned_links(storage))
            storage.delete(active_key(plan.run_id))
            step = post_run_step(plan.kind)  # no finish_run will queue it: nothing runs
            if step is not None:
                app.send_task(step.task, args=(plan.run_id,), producer=producer)
            stop_listening(app)
            return SubmitResult(plan.run_id, 0, int(step is not None), already, uploaded)
        storage.put_bytes(active_key(plan.run_id), b"", "text/plain")  # the healer watches it now
        for p in sorted(complete & rebuild):
            app.send_task(TASK_NAMES["reduce"], args=(plan.run_id, p), producer=producer)
            sent += 1
        if progress.seal(plan.total):
            app.send_task(TASK_NAMES["finish"], args=(plan.run_id,), producer=producer)
            sent += 1
    stop_listening(app)
    return SubmitResult(plan.run_id, queued, queued + sent, already, uploaded)


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
    """(jobs with an outcome, jobs) of a run, from folder listings, shard by shard."""
    done = total = 0
    for shard in iter_shards(storage, manifest):
        jobs = [job_from_dict(d) for d in shard["jobs"]]
        found = outcome_keys(storage, jobs)
        done += sum(has_outcome(j, found) for j in jobs)
        total += len(jobs)
    return done, total


def read_report(storage: Storage, run_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(storage.get_bytes(report_key(run_id)))
    except ObjectNotFound:
        return None


def _counted(counter: RunProgress) -> Snapshot | None:
    """The run's counters, or None while their Redis is away (a restart): the waiter then
    counts from storage listings until Redis answers again."""
    import redis

    try:
        return counter.snapshot()
    except redis.RedisError:
        return None


def wait_for_run(
    storage: Storage,
    run_id: str,
    timeout: float,
    progress: bool = True,
    poll: float = 1.0,
    grace: float = 30.0,
    counter: RunProgress | None = None,
) -> dict[str, Any]:
    """Block until the run's report is written (by its ``finish_run`` task) and return it.

    The bar counts jobs with an outcome: from the run's counters in Redis (``counter``; one
    round trip per poll, whatever the run's size), else from folder listings. If every job has
    one but no report appears within ``grace`` seconds, the report is built here from storage.
    ``TimeoutError`` after ``timeout`` seconds.
    """
    from tqdm import tqdm

    manifest = load_manifest(storage, run_id)
    deadline = time.monotonic() + timeout
    all_done_since: float | None = None
    with tqdm(total=job_count(manifest), unit="job", desc=run_id, disable=not progress) as bar:
        while True:
            try:
                report = read_report(storage, run_id)
                snap = _counted(counter) if counter is not None and report is None else None
                if snap is not None:
                    done, total = snap.done, job_count(manifest)
                    if snap.requeued or snap.duplicates:
                        bar.set_postfix(requeued=snap.requeued, duplicates=snap.duplicates,
                                        refresh=False)
                else:
                    done, total = run_progress(storage, manifest)
            except StorageUnavailable:  # S3 down for a while: keep waiting until the deadline
                report, done, total = None, bar.n, job_count(manifest)
            bar.update(done - bar.n)
            if report is not None:
                return report
            now = time.monotonic()
            if done == total and report is None:
                all_done_since = all_done_since or now
                if now - all_done_since > grace:
                    report = build_report(storage, manifest)
                    if report["complete"]:
                        storage.delete(active_key(run_id))
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
    wanted += [shard_key(run_id, n) for n in range(int(manifest.get("shards", 0)))]
    for d, item in zip(iter_jobs(storage, manifest), report["jobs"], strict=True):
        if item["status"] == "done":
            wanted.extend(item["outputs"].values())
        elif item["status"] == "failed":
            wanted.append(job_from_dict(d).error_key)
    for g in report["grids"]:
        if g["status"] != "pending":
            wanted.extend([g["png"], g["png"][: -len(".png")] + ".json"])
    if (step := post_run_step(str(manifest.get("kind")))) is not None:
        wanted.extend(step.outputs(storage, run_id))  # what the run's post-run step wrote
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
