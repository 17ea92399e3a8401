"""Completion without chords: each job's outcome is counted once in Redis (``shared.progress``);
the marker that completes a grid page queues its reducer, the one that completes the run queues
its report. A run is any number of independent tasks: Celery holds no chord state, and nothing
per job stays in Redis once the run is reported.

Task messages carry ``run = {"id": run id, "i": index of the job in the manifest, "p": index of
its grid page or None}``; a job sent without ``run`` (an old message, a direct call) still runs,
it just counts nowhere.

An outcome whose count fails (Redis unreachable: a dropped network, a restart) is not left to
the healer: it waits in this process's ``Recounter`` and is counted once Redis answers again,
by a background thread every ``RECOUNT_EVERY_S`` and at the next count that succeeds. A recount
is safe because counting sets the job's bit in the run's bitmap (``shared.progress``): a bit
already set changes nothing but the run's ``duplicates`` statistic. What a pending count cannot
survive is the worker's own death; the healer reconciles that run from storage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from convatlas.shared.config import Settings
from convatlas.shared.jobs import TASK_NAMES
from convatlas.shared.progress import Fired, RunProgress, progress_client

log = logging.getLogger(__name__)

_client: Any = None
_lock = threading.Lock()


def client() -> Any:
    """This process's Redis client for run progress (None when there is no Redis)."""
    global _client
    with _lock:
        if _client is None:
            _client = progress_client(Settings.from_env()) or False
        return _client or None


def run_progress(run_id: str) -> RunProgress | None:
    c = client()
    return None if c is None else RunProgress(c, run_id)


def send_reduce(app: Any, run_id: str, page: int) -> None:
    app.send_task(TASK_NAMES["reduce"], args=(run_id, page))


def send_finish(app: Any, run_id: str) -> None:
    app.send_task(TASK_NAMES["finish"], args=(run_id,))


def act_on(app: Any, run_id: str, page: int | None, fired: Fired) -> None:
    if fired.page and page is not None:
        send_reduce(app, run_id, page)
    if fired.run:
        send_finish(app, run_id)


def mark_outcome(run: dict[str, Any]) -> Fired | None:
    """Count the job of ``run`` (set its bit); what it completes, None without Redis."""
    progress = run_progress(str(run["id"]))
    if progress is None:
        return None
    return progress.mark(int(run["i"]), run.get("p"))


def count_outcome(app: Any, run: dict[str, Any] | None) -> None:
    """The job of ``run`` has an outcome in storage: count it, queue what it completes."""
    if not run:
        return
    fired = mark_outcome(run)
    if fired is not None:
        act_on(app, str(run["id"]), run.get("p"), fired)


# --- outcomes whose count failed -----------------------------------------------------------

RECOUNT_EVERY_S = 2.0  # how often pending counts are tried while Redis is away
MAX_PENDING = 100_000  # a bound on memory: (run, job) pairs, a few hundred bytes each


class Recounter:
    """Counts that failed, tried again until Redis takes them (one daemon thread, started on
    the first failure, ends when nothing is pending). A count that went through but whose
    reducer/report could not be queued (the broker away) keeps what it fired, and only the
    queueing is tried again: a second mark would find the bit set and fire nothing."""

    def __init__(self, app: Any, every: float = RECOUNT_EVERY_S) -> None:
        self.app, self.every = app, every
        # (run id, job index) -> [run, what its count fired, or None while not counted]
        self._pending: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: an item is acted on once
        self._thread: threading.Thread | None = None

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def defer(self, run: dict[str, Any], fired: Fired | None = None) -> None:
        """Keep ``run``'s outcome (counted already if ``fired`` is given) for later, and make
        sure a thread tries it."""
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                log.error("%d counts pending: dropping the oldest (the healer recounts it)",
                          len(self._pending))
                self._pending.popitem(last=False)
            self._pending[(str(run["id"]), int(run["i"]))] = [run, fired]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="convatlas-recount")
                self._thread.start()

    def flush(self) -> int:
        """Count what is pending, oldest first; stop at the first failure (Redis or the broker
        still away). Returns how many were settled (0 while another thread flushes)."""
        if not self._flushing.acquire(blocking=False):
            return 0
        try:
            settled = self._flush()
        finally:
            self._flushing.release()
        if settled:  # whichever path flushed: the thread, or the next count that succeeded
            log.warning("counted %d outcome(s) whose count had failed; %d still pending",
                        settled, self.pending())
        return settled

    def _flush(self) -> int:
        settled = 0
        while True:
            with self._lock:
                if not self._pending:
                    return settled
                key, item = next(iter(self._pending.items()))
            run, fired = item
            try:
                if fired is None:
                    fired = item[1] = mark_outcome(run)
                if fired is not None:
                    act_on(self.app, str(run["id"]), run.get("p"), fired)
            except Exception as exc:
                log.debug("pending count of %s still failing: %s", key, exc)
                return settled
            with self._lock:
                self._pending.pop(key, None)
            settled += 1

    def _loop(self) -> None:
        while self.pending():
            time.sleep(self.every)
            self.flush()


_recounters: dict[int, Recounter] = {}


def recounter(app: Any) -> Recounter:
    """This process's ``Recounter`` for ``app``."""
    with _lock:
        return _recounters.setdefault(id(app), Recounter(app))


def count_or_defer(app: Any, run: dict[str, Any] | None) -> None:
    """``count_outcome`` that never raises: a count (or the queueing of what it completes)
    that fails is kept and retried (``Recounter``); one that succeeds first flushes what
    earlier failures left pending."""
    if not run:
        return
    pending = recounter(app)
    fired: Fired | None = None
    try:
        fired = mark_outcome(run)
        if fired is not None:
            act_on(app, str(run["id"]), run.get("p"), fired)
    except Exception as exc:
        log.warning("could not count the outcome for run %s (kept, counted once Redis and "
                    "the broker answer): %s", run.get("id"), exc)
        pending.defer(run, fired)
        return
    if pending.pending():
        pending.flush()
