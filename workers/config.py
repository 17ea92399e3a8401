"""The fleet's Celery configuration, from ``convatlas.shared.config.Settings`` (environment).

Importing this module builds no app: the producer builds its own from explicit settings to send
tasks by name, and ``convatlas.workers.app`` builds the workers' one. Delivery is at-least-once
(late acks, reject on worker loss, Redis visibility timeout), which is safe because every job is
idempotent. Only JSON crosses the broker.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from convatlas.shared.config import Settings

QUEUE = "convatlas"


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://", "pyamqp://"))


# A broker that stops answering without closing the connection (packets dropped: a half-open
# connection) must not hang a worker. Set on purpose, and the bound they give: a synchronous
# broker or result-backend command (publish, ack, store a result) gives up after
# BROKER_SOCKET_TIMEOUT_S; a connect after BROKER_CONNECT_TIMEOUT_S; Redis: kombu drops a BRPOP
# whose reply is overdue by HEALTH_CHECK_S (so a dead consumer connection is seen within
# 1 + 2 × HEALTH_CHECK_S s); RabbitMQ: AMQP heartbeats every BROKER_HEARTBEAT_S (a silent
# connection is dead after 2 of them); TCP keepalive on both. Then the worker reconnects with
# Celery's schedule (2, 4, 6 … s, at most 30 s apart, forever: ``broker_connection_retry``),
# so it consumes again within ≈ 30 s + BROKER_CONNECT_TIMEOUT_S of the network's return,
# without a restart. Outcomes it could not count meanwhile are counted then
# (``convatlas.workers.completion.Recounter``).
BROKER_SOCKET_TIMEOUT_S = 10.0
BROKER_CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_S = 10
BROKER_HEARTBEAT_S = 10


def _transport_options(settings: Settings) -> dict[str, Any]:
    """Redis transport: messages unacked longer than the visibility timeout are redelivered.
    RabbitMQ: publisher confirms (a sent task is on the broker's disk when send returns).
    Both: the socket timeouts and keepalive above.

    ``CONVATLAS_UNACKED_RESTORE_INTERVAL`` (seconds) makes the restore scan run that often
    (kombu's default is every ~100 s), which tests with a small visibility timeout need.
    """
    if is_amqp(settings.broker_url):
        return {"confirm_publish": True}
    opts: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_S,
    }
    interval = os.environ.get("CONVATLAS_UNACKED_RESTORE_INTERVAL")
    if interval:
        opts["unacked_restore_interval"] = int(interval)
        opts["unacked_restore_throttle"] = int(
            os.environ.get("CONVATLAS_UNACKED_RESTORE_THROTTLE", "1")
        )
        # A worker SIGKILLed inside kombu's restore sweep leaves its mutex held for
        # unacked_mutex_expire (300 s by default): with a fast sweep, keep that short too.
        opts["unacked_mutex_expire"] = max(5, 5 * int(interval))
    return opts


def make_app(settings: Settings | None = None) -> Celery:
    """A configured app. Producers build their own from explicit settings; tasks are sent by
    name (``TASK_NAMES``), so a producer never imports ``convatlas.workers.tasks`` or TensorFlow."""
    s = settings or Settings.from_env()
    app = Celery("convatlas", include=["convatlas.workers.tasks"])
    transport = _transport_options(s)
    app.conf.update(
        broker_url=s.broker_url or None,
        result_backend=s.result_backend or s.broker_url or None,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": s.visibility_timeout},
        # Hard/soft limits are enforced by the prefork pool only; with the threads pool
        # ``convatlas.workers.batcher`` bounds each task's wait by the same limit.
        task_time_limit=s.task_time_limit,
        task_soft_time_limit=max(1, int(s.task_time_limit * 0.9)),
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        # a silent broker (see BROKER_SOCKET_TIMEOUT_S): retried forever, never a restart
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT_S,
        broker_heartbeat=BROKER_HEARTBEAT_S,
        redis_socket_timeout=BROKER_SOCKET_TIMEOUT_S,
        redis_socket_connect_timeout=BROKER_CONNECT_TIMEOUT_S,
        redis_socket_keepalive=True,
        # False: the threads pool cannot cancel a running task (each attempt logs a traceback
        # per task held, on every connection loss); its late ack fails and the broker hands the
        # message out again, which a content-addressed job skips
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Each thread holds one task: a worker reserves exactly as many tasks as it has
        # threads (= the largest batch it can form) and leaves the rest to other workers.
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=True,
    )
    if is_amqp(s.broker_url):
        # RabbitMQ: a quorum queue (replicated, durable). A consumer's unacked messages go
        # back to the queue the moment its connection drops (a SIGKILLed worker's tasks return
        # at once, no visibility timeout). Caveats: quorum queues have no global QoS (Celery
        # detects the queue type and uses per-consumer prefetch) and RabbitMQ 4.x sets a
        # delivery limit of 20 redeliveries by default (3.x has none): a message redelivered
        # more often is dropped, and the healer queues its job again.
        app.conf.update(task_default_queue_type="quorum", worker_detect_quorum_queues=True)
    app.conf.update(redis_tls(s))
    return app


def own_queue_command(consumer: Any, command: str) -> Any:
    """``cancel_consumer``/``add_consumer`` of the task queue on this worker only, as a remote
    control command (it runs in the consumer's own thread); the replies (empty: unanswered).
    Raises when the broker cannot carry it."""
    return getattr(consumer.app.control, command)(
        QUEUE, destination=[consumer.hostname], reply=True, timeout=5)


def redis_tls(s: Settings) -> dict[str, Any]:
    """TLS to a ``rediss://`` broker or result backend: the server's certificate is verified
    (against ``CONVATLAS_TLS_CA`` when set, else the system's CAs), never skipped."""
    import ssl

    options = {"ssl_cert_reqs": ssl.CERT_REQUIRED,
               **({"ssl_ca_certs": s.tls_ca} if s.tls_ca else {})}
    conf: dict[str, Any] = {}
    if s.broker_url.startswith("rediss://"):
        conf["broker_use_ssl"] = options
    if (s.result_backend or s.broker_url).startswith("rediss://"):
        conf["redis_backend_use_ssl"] = options
    return conf


def default_concurrency(settings: Settings) -> int:
    """Task threads of a worker: ``CONVATLAS_WORKER_CONCURRENCY`` if set, else 2 ×
    ``CONVATLAS_MAX_BATCH``, so the next batch gathers while one runs (each thread holds one
    task; prefetch is 1 per thread)."""
    return settings.worker_concurrency or 2 * settings.max_batch


def worker_argv(
    settings: Settings,
    *,
    concurrency: int | None = None,
    loglevel: str = "info",
    hostname: str | None = None,
    python: str | None = None,
) -> list[str]:
    """The one command line of a convatlas worker (CLI, local stack, tests, benchmarks):
    Celery's threads pool, the convatlas queue, task events on for Flower."""
    import sys

    return [
        python or sys.executable, "-m", "celery", "-A", "convatlas.workers.app", "worker",
        "--pool", "threads",
        "--concurrency", str(concurrency or default_concurrency(settings)),
        "--loglevel", loglevel,
        "--queues", QUEUE,
        "--hostname", hostname or f"convatlas-{os.getpid()}@%h",
        "--task-events",
    ]
