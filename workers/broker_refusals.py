"""A Redis that refuses writes is a broker outage, not a crash.

With a full disk (a failed RDB snapshot and ``stop-writes-on-bgsave-error``: ``MISCONF``), a
full memory (``maxmemory`` with ``noeviction``: ``OOM``) or a read-only replica, Redis refuses
the writes a worker makes while consuming (BRPOP, the ``unacked`` record, the bindings Celery
declares when it reconnects). kombu raises those as ``ResponseError``, a channel error, and
Celery's consumer stops on it ("Unrecoverable error: ResponseError"): a bare
``convatlas worker`` exits, and nothing restarts it. Here those refusals count as connection
errors of kombu's Redis transport, so the consumer reconnects (Celery's schedule, 2, 4, 6 … s,
at most 30 s apart) and consumes again once Redis accepts writes. kombu's restore sweep, which
takes a lock with SET when the consumer connects, skips a round instead.

A message popped while its ``unacked`` record is refused (``OOM``) is queued again by the healer
or by a re-submission.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from redis._parsers.base import BaseParser

log = logging.getLogger(__name__)


class MisconfError(redis.exceptions.ResponseError):
    """``MISCONF``: Redis refuses writes since its last snapshot failed (disk full)."""


# OOM, READONLY and EXECABORT (a transaction holding a refused write) have redis-py classes
REFUSED: tuple[type[Exception], ...] = (
    redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
    redis.exceptions.ExecAbortError, MisconfError)


def refusals_as_connection_loss() -> None:
    """Install the above in this process (idempotent): the worker's, before it connects."""
    BaseParser.EXCEPTION_CLASSES.setdefault("MISCONF", MisconfError)
    transport = kombu_redis.Transport
    if MisconfError not in transport.connection_errors:
        transport.connection_errors = (*transport.connection_errors, *REFUSED)
        _skip_refused_restores()


def _skip_refused_restores() -> None:
    qos = kombu_redis.QoS
    original = qos.restore_visible

    def restore_visible(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except REFUSED as exc:
            log.warning("restore of unacknowledged messages skipped: broker refuses writes (%r)",
                        exc)
            return None

    qos.restore_visible = restore_visible  # type: ignore[method-assign]
