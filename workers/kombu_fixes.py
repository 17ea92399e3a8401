"""A fix for kombu's Redis transport (5.7): without it a worker that loses Redis while a BRPOP is
in flight and a task is still unacknowledged dies ("Unrecoverable error: AttributeError:
'NoneType' object has no attribute 'hostname'"), and nothing restarts a bare ``convatlas worker``.

On a connection loss Celery's consumer first ``collect()``s the connection. The Redis channel's
``close`` reads the pending BRPOP reply first; with Redis gone that raises a connection error,
which aborts the close before the channel is marked closed, and ``collect`` then clears the
transport's client. The consumer's ``close()`` that follows closes the channel again, and
restoring its unacknowledged messages needs a Redis pool built from that cleared client.

Here a connection error on the pending reply no longer aborts the close: that reply is lost with
the connection either way (its message is queued again by ``convatlas.workers.healer``), and the
unacknowledged messages stay in kombu's ``unacked`` hash in Redis, which the visibility timeout
restores.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

_MARK = "_convatlas_pending_reply_fix"


def close_despite_a_lost_reply() -> None:
    """Wrap ``kombu.transport.redis.Channel.close`` (once per process)."""
    channel = kombu_redis.Channel
    if getattr(channel.close, _MARK, False):
        return
    original = channel.close

    def close(self: Any) -> None:
        if self._in_poll:  # a BRPOP in flight: read its reply now, or give it up
            try:
                self._brpop_read()  # clears _in_poll whatever happens
            except kombu_redis.Empty:
                pass
            except self.connection_errors:
                pass  # the connection is gone, and the reply with it
        original(self)

    setattr(close, _MARK, True)
    channel.close = close  # type: ignore[method-assign]
