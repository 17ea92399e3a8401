"""A worker's memory limit, and a bound on the attempts of a job that keeps killing its worker.

The threads pool has no ``max_memory_per_child``, and one out-of-memory kill takes every job in
flight with it. So each worker watches its own RSS (``MemoryGuard``, once a second): past
``CONVATLAS_WORKER_MAX_RSS`` it stops consuming, lets the tasks it holds finish (their outcomes
are counted and acked), then exits with ``EXIT_MEMORY`` for its supervisor (the local stack's,
or compose's ``restart:``) to start a fresh one.

A job that alone exceeds the memory its worker has is killed with it (the kernel's OOM killer)
and redelivered, forever: Redis has no "redelivered" flag. ``attempt`` counts the starts of each
job that never reached an end (a hash in Redis, keyed by the job's marker, cleared when the job
ends either way); a job whose worker died under it ``lost_attempts()`` times is recorded as
failed with that reason instead of being run again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

MAX_RSS_ENV = "CONVATLAS_WORKER_MAX_RSS"
LOST_ATTEMPTS_ENV = "CONVATLAS_WORKER_LOST_ATTEMPTS"
LOST_ATTEMPTS = 3  # a job whose worker died under it this many times is failed for good
EXIT_MEMORY = 75  # EX_TEMPFAIL: "try again", a fresh worker; supervisors restart on it
CHECK_EVERY_S = 1.0
ATTEMPTS_KEY = "convatlas:attempts"
ATTEMPTS_TTL_S = 7 * 24 * 3600

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """Bytes of ``"1500000"``, ``"512M"``, ``"2G"``, ``"2GiB"``; 0 (no limit) for ``""``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if text.strip() == "":
        return 0
    if m is None:
        raise ValueError(f"{MAX_RSS_ENV}={text!r}: expected bytes, or a size like 512M or 2G")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def max_rss() -> int:
    """The worker's RSS limit in bytes (``CONVATLAS_WORKER_MAX_RSS``), 0 for none."""
    return parse_size(os.environ.get(MAX_RSS_ENV, ""))


def lost_attempts() -> int:
    """Starts without an end after which a job is failed (``CONVATLAS_WORKER_LOST_ATTEMPTS``)."""
    return int(os.environ.get(LOST_ATTEMPTS_ENV, str(LOST_ATTEMPTS)))


def rss_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryGuard(threading.Thread):
    """Once RSS passes ``limit``: stop consuming, drain, exit with ``EXIT_MEMORY``."""

    def __init__(self, consumer: Any, limit: int, *, rss: Callable[[], int] = rss_bytes,
                 exit: Callable[[int], Any] = os._exit, every: float = CHECK_EVERY_S) -> None:
        super().__init__(daemon=True, name="memory-guard")
        self.consumer, self.limit, self.rss, self.exit, self.every = (
            consumer, limit, rss, exit, every)

    def run(self) -> None:
        while (used := self.rss()) <= self.limit:
            time.sleep(self.every)
        log.warning("worker RSS %d MB passed %s=%d MB: no new tasks; draining, then exiting "
                    "with code %d for a fresh worker", used >> 20, MAX_RSS_ENV,
                    self.limit >> 20, EXIT_MEMORY)
        self.stop_consuming()
        self.drain()
        log.warning("drained: exiting with code %d (memory)", EXIT_MEMORY)
        for handler in logging.getLogger().handlers:
            handler.flush()
        self.exit(EXIT_MEMORY)

    def stop_consuming(self) -> None:
        """Cancel the task queue in the consumer's own thread (a remote control command to
        this node); by hand if the broker cannot carry it."""
        from convatlas.workers.config import QUEUE, own_queue_command

        try:
            replies = own_queue_command(self.consumer, "cancel_consumer")
        except Exception:  # noqa: BLE001 (the broker is away: cancel here)
            replies = None
        if not replies:  # no answer: it may not have run, and the drain would never end
            log.warning("memory guard: remote cancel unanswered; cancelling the queue directly")
            self.consumer.cancel_task_queue(QUEUE)

    def drain(self) -> None:
        """Wait for the tasks this worker holds (each ends within its time limit), then for
        the pool's threads, which ack them after they are marked ready."""
        from celery.worker import state

        while state.reserved_requests:
            time.sleep(0.2)
        executor = getattr(getattr(self.consumer, "pool", None), "executor", None)
        if executor is not None:
            executor.shutdown(wait=True)


def start_guard(consumer: Any) -> MemoryGuard | None:
    """The guard of this worker if ``CONVATLAS_WORKER_MAX_RSS`` is set (at ``worker_ready``)."""
    limit = max_rss()
    if not limit:
        return None
    at_start = rss_bytes()
    if at_start >= limit:  # it would exit at once, every restart: a loop that serves nothing
        log.error("memory guard off: CONVATLAS_WORKER_MAX_RSS=%d MB is below this worker's RSS "
                  "at start (%d MB); raise it above what an idle worker takes", limit >> 20,
                  at_start >> 20)
        return None
    guard = MemoryGuard(consumer, limit)
    guard.start()
    log.info("memory guard: exits to be restarted past %d MB RSS", limit >> 20)
    return guard


@contextmanager
def attempt(redis_client: Any, marker: str) -> Iterator[str | None]:
    """One attempt of the job with ``marker``: yields the reason to fail it for good (its
    worker died under it ``lost_attempts()`` times) or None; the count is cleared when the
    attempt ends (returns, retries or raises), so only attempts cut short by a dead worker
    add up. No Redis: no count."""
    if redis_client is None:
        yield None
        return
    try:
        started = int(redis_client.hincrby(ATTEMPTS_KEY, marker, 1))
        redis_client.expire(ATTEMPTS_KEY, ATTEMPTS_TTL_S)
    except Exception:  # noqa: BLE001 (Redis away: run it uncounted)
        log.warning("could not count the attempt of %s", marker)
        yield None
        return
    limit = lost_attempts()
    lost = started - 1
    try:
        yield (f"exceeded memory {lost} times: its worker died while running it each time "
               f"(see {MAX_RSS_ENV})" if limit and lost >= limit else None)
    finally:
        try:
            redis_client.hdel(ATTEMPTS_KEY, marker)
        except Exception:  # noqa: BLE001 (a stale count only matters after N more deaths)
            log.warning("could not clear the attempt count of %s", marker)
