"""The Celery app of the fleet, configured from ``convatlas.shared.config.Settings`` (environment).

Start a worker with ``celery -A convatlas.workers.app worker --pool threads --concurrency 64 -E`` (or
``convatlas worker``). The threads pool is deliberate: each task is one filter or one photo, and
``convatlas.workers.batcher`` gathers the tasks running in the threads of one process into one model call.

Delivery is at-least-once (late acks, reject on worker loss, Redis visibility timeout), which is
safe because every job is idempotent: its outputs live under a content-addressed key and a job
whose marker exists is skipped. Only JSON crosses the broker, and never image bytes, only keys.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

from convatlas.shared.config import Settings, redact_url

log = logging.getLogger(__name__)

TASK_NAMES = {
    "filter": "convatlas.filter_pattern",
    "gradcam": "convatlas.gradcam",
    "reduce": "convatlas.reduce_grid",
    "finish": "convatlas.finish_run",
}
QUEUE = "convatlas"


def _transport_options(settings: Settings) -> dict[str, Any]:
    """Redis transport: messages unacked longer than the visibility timeout are redelivered.

    ``CONVATLAS_UNACKED_RESTORE_INTERVAL`` (seconds) makes the restore scan run that often
    (kombu's default is every ~100 s), which tests with a small visibility timeout need.
    """
    opts: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    interval = os.environ.get("CONVATLAS_UNACKED_RESTORE_INTERVAL")
    if interval:
        opts["unacked_restore_interval"] = int(interval)
        opts["unacked_restore_throttle"] = int(
            os.environ.get("CONVATLAS_UNACKED_RESTORE_THROTTLE", "1")
        )
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
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Each thread holds one task: a worker reserves exactly as many tasks as it has
        # threads (= the largest batch it can form) and leaves the rest to other workers.
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=True,
    )
    return app


app = make_app()


def _log_config(**_: Any) -> None:
    """What this worker talks to, with the broker password redacted."""
    s = Settings.from_env()
    log.info(
        "convatlas worker: broker %s, storage s3://%s/%s at %s, batch window %d ms, max batch %d",
        redact_url(s.broker_url), s.s3_bucket, s.s3_prefix, s.s3_endpoint or "AWS",
        s.batch_window_ms, s.max_batch,
    )


def _init_tf(**_: Any) -> None:
    """GPU memory growth in each prefork child before any model loads (workers may share a
    GPU). Never in the parent: TensorFlow must not be imported before a fork. The threads pool
    imports TensorFlow lazily through ``convatlas.shared.tf_env.import_tf``, which does the same."""
    from convatlas.shared.tf_env import import_tf

    import_tf()


worker_init.connect(_log_config, weak=False)
worker_process_init.connect(_init_tf, weak=False)
