"""A worker whose clock is off stops taking tasks until its clock is right again.

S3 signs every request with the sender's clock and refuses signatures more than 15 minutes off
(``RequestTimeTooSkewed``, or a bare 403 on a HEAD). A worker with a wrong clock would take
tasks only to fail them. So each worker compares its clock with the fleet's, the Redis
server's ``TIME`` (the clock run progress is stamped with, ``convatlas.shared.progress``), when
it is ready and every ``CHECK_EVERY_S``. Past ``CONVATLAS_MAX_CLOCK_SKEW`` seconds (default
``MAX_CLOCK_SKEW_S``, well inside S3's window) it cancels its task queue and says why in its
log. It consumes again once the clock is back.

A task that meets ``ClockSkewed`` anyway (the clock jumped between two checks) is queued again
at once, with no ETA, since an ETA would be stamped with the wrong clock. A worker with a right
clock takes it, and this guard checks at once (``alarm``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from convatlas.shared.storage import MAX_CLOCK_SKEW_S

log = logging.getLogger(__name__)

MAX_SKEW_ENV = "CONVATLAS_MAX_CLOCK_SKEW"
CHECK_EVERY_S = 30.0

_guard: ClockGuard | None = None


def max_skew() -> float:
    """Seconds of skew past which a worker stops consuming (``CONVATLAS_MAX_CLOCK_SKEW``)."""
    return float(os.environ.get(MAX_SKEW_ENV, str(MAX_CLOCK_SKEW_S)))


def skew_from(redis_client: Any) -> float:
    """Seconds this machine's clock is ahead of the Redis server's (half a round trip off at
    most)."""
    before = time.time()
    sec, usec = redis_client.time()
    after = time.time()
    return (before + after) / 2 - (float(sec) + usec / 1e6)


class ClockGuard(threading.Thread):
    """Checks the skew every ``every`` seconds (or at ``alarm``); cancels and re-adds this
    worker's task queue as the clock leaves and comes back."""

    def __init__(self, consumer: Any, redis_client: Any, limit: float,
                 every: float = CHECK_EVERY_S) -> None:
        super().__init__(daemon=True, name="clock-guard")
        self.consumer, self.client, self.limit, self.every = consumer, redis_client, limit, every
        self.consuming = True
        self._wake = threading.Event()

    def alarm(self) -> None:
        """Check now (a task just met ``ClockSkewed``)."""
        self._wake.set()

    def run(self) -> None:
        while True:
            self.check()
            self._wake.wait(self.every)
            self._wake.clear()

    def check(self) -> None:
        try:
            skew = skew_from(self.client)
        except Exception as exc:  # noqa: BLE001 (Redis away: nothing is known, nothing changes)
            log.debug("clock check failed: %s", exc)
            return
        off = abs(skew) > self.limit
        if off and self.consuming:
            log.error("this worker's clock is %+.0f s off the fleet's (Redis TIME), past %s=%.0f:"
                      " S3 refuses its signatures, so it takes no tasks until its clock is set "
                      "(NTP)", skew, MAX_SKEW_ENV, self.limit)
            self.consuming = not self._control("cancel_consumer")
        elif not off and not self.consuming:
            log.warning("this worker's clock is back within %.0f s of the fleet's (%+.1f s): "
                        "taking tasks again", self.limit, skew)
            self.consuming = self._control("add_consumer")

    def _control(self, command: str) -> bool:
        """``cancel_consumer``/``add_consumer`` of this worker's task queue; whether it
        answered."""
        from convatlas.workers.config import own_queue_command

        try:
            replies = own_queue_command(self.consumer, command)
        except Exception as exc:  # noqa: BLE001 (the broker is away: try at the next check)
            log.warning("clock guard: %s failed: %s", command, exc)
            return False
        return bool(replies)


def start_guard(consumer: Any, redis_client: Any) -> ClockGuard | None:
    """This worker's guard (at ``worker_ready``), when there is a Redis to compare with."""
    global _guard
    if redis_client is None:
        return None
    _guard = ClockGuard(consumer, redis_client, max_skew())
    _guard.start()
    return _guard


def alarm() -> None:
    """A task met ``ClockSkewed``: have the guard check now."""
    if _guard is not None:
        _guard.alarm()
