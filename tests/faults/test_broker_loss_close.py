"""A worker that loses Redis while a BRPOP is in flight and a task is unacknowledged survives
(``convatlas.workers.kombu_fixes``): what Celery's consumer does on that loss, replayed on a
kombu connection, closes cleanly, and the unacknowledged message stays in Redis for the
visibility timeout to restore. Found by restarting Redis under a busy worker, which died with
"Unrecoverable error: AttributeError: 'NoneType' object has no attribute 'hostname'"."""

from __future__ import annotations

import secrets
from pathlib import Path

from kombu import Connection, Exchange, Queue

from convatlas.stack.servers import RedisServer
from convatlas.workers.kombu_fixes import close_despite_a_lost_reply


def test_connection_loss_with_a_brpop_in_flight_closes_cleanly(tmp_path: Path) -> None:
    close_despite_a_lost_reply()  # as the worker app does
    redis = RedisServer(tmp_path / "redis", password=secrets.token_urlsafe(18), persistent=True)
    redis.start()
    try:
        work = Queue("work", Exchange("work", type="direct"), routing_key="work")
        with Connection(redis.url) as producer:
            producer.Producer().publish({"job": 1}, exchange=work.exchange, routing_key="work",
                                        declare=[work])
        conn = Connection(redis.url, transport_options={"visibility_timeout": 60})
        channel = conn.default_channel
        # as a Celery worker does: its task queue and a broadcast one (remote control)
        bcast = Queue("bcast", Exchange("bcast", type="fanout"), auto_delete=True)
        taken: list[object] = []
        conn.Consumer([work, bcast], callbacks=[lambda body, msg: taken.append(msg)],
                      channel=channel).consume()
        conn.drain_events(timeout=5)
        assert len(taken) == 1  # delivered, not acknowledged
        try:
            conn.drain_events(timeout=0.3)  # nothing queued: a BRPOP stays in flight
        except TimeoutError:
            pass
        assert channel._in_poll
        redis.stop()  # SHUTDOWN: the append-only file keeps the unacked record

        conn.collect(socket_timeout=0.5)  # Celery's consumer on a connection loss: first this,
        conn.close()  # then this (it raised AttributeError, and the worker exited)
        assert channel.closed

        redis.start()
        client = redis._client(redis.password)
        assert client.hlen("unacked") == 1  # still owed: the visibility timeout restores it
    finally:
        redis.stop()
