"""Self-healing runs: jobs that lost their message are queued again, without any human.

A message can be lost while nobody watches: a worker SIGKILLed with prefetched tasks (they come
back only after the broker's visibility timeout, an hour by default), a message lost between
kombu's BRPOP and its unacked record, Redis restarted without persistence (the queue and the
run's counters are gone). Storage still knows what is done, and the manifest what was asked.

Every worker process runs one ``Healer`` thread, but only the holder of a Redis lock acts in a
round, so one fleet heals once. A round looks at each active run (``runs/active/<id>`` in
storage): a run whose counters have seen no new outcome for ``CONVATLAS_REQUEUE_AFTER`` seconds
is reconciled with storage: outcomes that exist but were never counted are counted (which may
queue a page reducer or the run's report), jobs with no outcome are queued again, and the clock
restarts, with the wait doubled until an outcome arrives (slow jobs are not queued again and
again). A run whose counters are gone (Redis restarted) gets them rebuilt from storage first.
Duplicates are harmless (content-addressed results) and counted in the run's counters.

A job that a live worker holds (running, or prefetched and waiting: Celery's ``inspect active``
and ``inspect reserved``) is never queued again, however long it takes: a slow batch (a deep
lucid page runs for minutes) is not lost, only slow. A SIGKILLed worker answers no inspection,
and a message lost in transit is held by nobody, so those are queued again as before. If no
worker answers at all the round falls back to queueing every job without an outcome.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from convatlas.shared.config import Settings
from convatlas.shared.jobs import TASK_NAMES, job_from_dict, kind_of, read_json
from convatlas.shared.jobs.outcomes import has_outcome, job_pages, outcome_keys
from convatlas.shared.manifest import iter_jobs, job_count, load_manifest
from convatlas.shared.progress import RunProgress
from convatlas.shared.report import active_key, active_runs, report_key
from convatlas.shared.storage import ObjectNotFound, Storage
from convatlas.workers.completion import act_on

log = logging.getLogger(__name__)

LOCK = "convatlas:healer"


def heal_interval(requeue_after: float) -> float:
    """How often a round runs: a quarter of the requeue delay, between 1 and 30 s."""
    return max(1.0, min(30.0, requeue_after / 4))


def index_ranges(indices: list[int], most: int = 20) -> str:
    """Sorted job indices as ranges, ``"0-5, 9, 12-63"``: a whole run queued again after a
    restart without persistence stays one short log line; past ``most`` ranges, ``…``."""
    spans: list[list[int]] = []
    for i in sorted(indices):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans[:most])
    return text + (", …" if len(spans) > most else "")


def held_jobs(app: Any, timeout: float = 1.0) -> set[tuple[str, int]] | None:
    """``(run id, job index)`` of every job a live worker is running or holds prefetched;
    ``None`` when no worker answered (then nothing is known to be held)."""
    inspect = app.control.inspect(timeout=timeout)
    replies = [inspect.active() or {}, inspect.reserved() or {}]
    if not any(replies):
        return None
    held: set[tuple[str, int]] = set()
    for reply in replies:
        for tasks in reply.values():
            for task in tasks or ():
                args: list[Any] = list(task.get("args") or [])
                run = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
                if "id" in run and "i" in run:
                    held.add((str(run["id"]), int(run["i"])))
    return held


def heal_run(app: Any, storage: Storage, client: Any, run_id: str, requeue_after: float,
             now: float | None = None) -> int:
    """One run: reconcile with storage if it stalled. Returns the number of jobs queued again."""
    progress = RunProgress(client, run_id)
    now = now or progress.now()  # Redis's clock, the one outcomes are stamped with
    snap = progress.snapshot()
    try:
        manifest = load_manifest(storage, run_id)
    except ObjectNotFound:
        storage.delete(active_key(run_id))
        return 0
    if snap is None:  # Redis lost the run (restart without persistence): count from storage
        grids = manifest.get("grids", [])
        progress.start({p: len(g["filters"]) for p, g in enumerate(grids)}, now=now)
        progress.seal(job_count(manifest), now=now)
        log.warning("run %s: progress state was lost; rebuilding it from storage", run_id)
        snap = progress.snapshot()
        assert snap is not None
        stalled = True  # the queue may be gone too
    else:
        stalled = snap.stalled(now, requeue_after)
    if snap.finished or (snap.total is not None and snap.done >= snap.total):
        # every job has its outcome (``stalled`` is False then): only the report can be missing
        if read_json(storage, report_key(run_id)) is None and now - snap.last >= requeue_after:
            app.send_task(TASK_NAMES["finish"], args=(run_id,))  # its message was lost
            log.warning("run %s: complete but no report after %.0f s; queued its report again",
                        run_id, now - snap.last)
            progress.touch(now)
        return 0
    if not stalled:
        return 0
    from convatlas.shared.jobs import grid_from_dict

    # the job list is read only now: a round over a healthy 10^5-job run costs no shard reads
    jobs = [job_from_dict(d) for d in iter_jobs(storage, manifest)]

    pages = job_pages([grid_from_dict(g) for g in manifest.get("grids", [])], jobs)
    counted = progress.marked(len(jobs))
    found = outcome_keys(storage, [j for j, c in zip(jobs, counted, strict=True) if not c])
    requeued: list[int] = []
    held_back = 0
    held: set[tuple[str, int]] | None = None
    with app.producer_or_acquire() as producer:
        for i, (job, seen) in enumerate(zip(jobs, counted, strict=True)):
            if seen:
                continue
            if has_outcome(job, found):  # done, but its count was lost
                act_on(app, run_id, pages[i], progress.mark(i, pages[i], now))
                continue
            if held is None:  # asked once per round, only when a job lacks its outcome
                held = held_jobs(app) or set()
            if (run_id, i) in held:  # slow, not lost
                held_back += 1
                continue
            app.send_task(kind_of(job).task, args=(job.to_dict(),
                          {"id": run_id, "i": i, "p": pages[i]}), producer=producer)
            requeued.append(i)
    if requeued:
        progress.add_requeued(len(requeued))
        # which jobs: an operator can match them to the worker logs (lost messages)
        log.warning("run %s: no progress for %.0f s; queued %d jobs again (jobs %s)", run_id,
                    now - snap.last, len(requeued), index_ranges(requeued))
    if held_back:
        log.info("run %s: no progress for %.0f s; %d jobs are still held by live workers",
                 run_id, now - snap.last, held_back)
    progress.healed(now)
    return len(requeued)


def heal_once(app: Any, storage: Storage, client: Any, requeue_after: float,
              token: str = "") -> int | None:
    """One round if this process gets the lock (None otherwise): jobs queued again in all."""
    token = token or secrets.token_hex(8)
    ttl = max(5, int(heal_interval(requeue_after) * 3))
    if not client.set(LOCK, token, nx=True, ex=ttl):
        return None
    try:
        return sum(heal_run(app, storage, client, run_id, requeue_after)
                   for run_id in active_runs(storage))
    finally:
        if client.get(LOCK) == token.encode():
            client.delete(LOCK)


class Healer:
    """The healing loop of one worker process (a daemon thread)."""

    def __init__(self, app: Any, storage_factory: Any, client: Any,
                 settings: Settings | None = None) -> None:
        self.app, self.storage_factory, self.client = app, storage_factory, client
        self.requeue_after = float((settings or Settings.from_env()).requeue_after)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="convatlas-healer", daemon=True)

    def start(self) -> Healer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        token = secrets.token_hex(8)
        while not self._stop.wait(heal_interval(self.requeue_after)):
            try:
                heal_once(self.app, self.storage_factory(), self.client, self.requeue_after, token)
            except Exception as exc:  # storage or Redis away: try again next round
                log.warning("healer round failed: %s: %s", type(exc).__name__, exc)
