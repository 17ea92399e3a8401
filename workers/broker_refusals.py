"""A Redis that refuses writes is a broker outage, not a crash.

With a full disk (a failed RDB snapshot and ``stop-writes-on-bgsave-error``: ``MISCONF``) or
a read-only replica, Redis refuses BRPOP, which removes a message. kombu raises that as a
``ResponseError``, a channel error, and Celery's consumer stops on it ("Unrecoverable error:
ResponseError"): a bare ``convatlas worker`` exits, and nothing restarts it. Here the refusal
reads as a lost connection instead, so the consumer reconnects on Celery's schedule (2, 4, 6 …
s, at most 30 s apart) and consumes again once Redis accepts writes. ``OOM`` never reaches
BRPOP (popping frees memory) but is handled the same way.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

REFUSALS = ("MISCONF", "OOM", "READONLY")  # Redis's error codes for refused writes
_MARK = "_convatlas_refusal_fix"


def refusals_as_connection_loss() -> None:
    """Wrap ``kombu.transport.redis.Channel._brpop_read`` (once per process)."""
    channel = kombu_redis.Channel
    if getattr(channel._brpop_read, _MARK, False):
        return
    original = channel._brpop_read

    def _brpop_read(self: Any, **options: Any) -> Any:
        try:
            return original(self, **options)
        except redis.ResponseError as exc:
            if not str(exc).startswith(REFUSALS):
                raise
            raise redis.ConnectionError(f"broker refuses writes: {exc}") from exc

    setattr(_brpop_read, _MARK, True)
    channel._brpop_read = _brpop_read  # type: ignore[method-assign]
