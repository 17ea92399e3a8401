"""RabbitMQ's delivery acknowledgement timeout is a lost connection, not a crash.

RabbitMQ closes a channel whose consumer holds a delivery unacknowledged for longer than its
``consumer_timeout`` (30 minutes by default; hosted brokers often set less) and requeues what
the channel held. py-amqp raises that close as ``PreconditionFailed``, a channel error, and
Celery's consumer stops on it ("Unrecoverable error: PreconditionFailed … delivery
acknowledgement on channel 1 timed out"): a bare ``convatlas worker`` exits, and nothing
restarts it. Here that one close (406 with RabbitMQ's "delivery acknowledgement" text) is
raised as ``AckTimedOut``, a recoverable connection error, so the consumer reconnects and
takes the requeued deliveries again. A job then runs twice, which its content-addressed
outputs and the run's bitmap of counted jobs make harmless. Any other 406 (a queue declared
with other arguments, say) still stops the worker: reconnecting would not cure it.
"""

from __future__ import annotations

from typing import Any

from amqp import channel as amqp_channel
from amqp.exceptions import PreconditionFailed, RecoverableConnectionError

ACK_TIMEOUT_TEXT = "delivery acknowledgement"


class AckTimedOut(RecoverableConnectionError):
    """RabbitMQ closed the channel: a delivery outlived its ``consumer_timeout``."""


def ack_timeouts_as_connection_loss() -> None:
    """Install the above in this process (idempotent): the worker's, before it connects."""
    cls = amqp_channel.Channel
    original = cls._on_close
    if getattr(original, "_convatlas", False):
        return

    def _on_close(self: Any, reply_code: int, reply_text: str, *args: Any) -> Any:
        try:
            return original(self, reply_code, reply_text, *args)
        except PreconditionFailed as exc:
            if ACK_TIMEOUT_TEXT in str(reply_text):
                raise AckTimedOut(str(reply_text)) from exc
            raise

    _on_close._convatlas = True  # type: ignore[attr-defined]
    cls._on_close = _on_close
