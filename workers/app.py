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
import warnings
from typing import Any

from celery.exceptions import CPendingDeprecationWarning
from celery.signals import (
    celeryd_after_setup,
    worker_init,
    worker_process_init,
    worker_ready,
)

from convatlas.shared.config import Settings, redact_url
from convatlas.shared.jobs.kinds import TASK_NAMES
from convatlas.workers.ack_timeouts import ack_timeouts_as_connection_loss
from convatlas.workers.broker_refusals import refusals_as_connection_loss
from convatlas.workers.config import QUEUE, make_app
from convatlas.workers.kombu_fixes import close_despite_a_lost_reply

log = logging.getLogger(__name__)

__all__ = ["QUEUE", "TASK_NAMES", "app", "make_app"]


close_despite_a_lost_reply()  # before any broker connection (workers.kombu_fixes)
ack_timeouts_as_connection_loss()  # RabbitMQ's consumer_timeout: reconnect (workers.ack_timeouts)
refusals_as_connection_loss()  # a full disk is an outage, not a crash (workers.broker_refusals)
app = make_app()


def _quiet_chosen_default(**_: Any) -> None:
    """``worker_cancel_long_running_tasks_on_connection_loss`` is off on purpose
    (``workers.config``): not news at every connection loss. Once the worker is ready: after
    Celery's logging setup, which puts its own 'always' filter for the category first."""
    warnings.filterwarnings("ignore", message=r"\s*In Celery 5\.1 we introduced an optional",
                            category=CPendingDeprecationWarning)


worker_ready.connect(_quiet_chosen_default, weak=False)


def _log_config(**_: Any) -> None:
    """What this worker talks to, with the broker password redacted."""
    s = Settings.from_env()
    log.info(
        "convatlas worker: broker %s, storage %s, batch window %d ms, max batch %d",
        redact_url(s.broker_url),
        f"local directory {s.storage_dir}" if s.storage_dir
        else f"s3://{s.s3_bucket}/{s.s3_prefix} at {s.s3_endpoint or 'AWS'}",
        s.batch_window_ms, s.max_batch,
    )


def _log_backend(instance: Any = None, **_: Any) -> None:
    """The backend, and its devices unless this is a prefork parent (no framework before a fork:
    each child logs its devices in ``_init_tf``). At ``celeryd_after_setup``: logging is set up
    by then (at ``worker_init`` an INFO line is dropped), the pool not yet started."""
    from convatlas.shared.backend_select import check_backend, describe

    if "prefork" in str(getattr(instance, "pool_cls", "")).lower():
        log.info("convatlas worker: backend %s (each process logs its devices)", check_backend())
    else:
        log.info("convatlas worker: %s", describe())


def _init_tf(**_: Any) -> None:
    """GPU memory growth in each prefork child before any model loads (workers may share a
    GPU). Never in the parent: TensorFlow must not be imported before a fork. The threads pool
    imports TensorFlow lazily through ``convatlas.shared.tf_env.import_tf``, which does the same."""
    from convatlas.shared.backend_select import check_backend, describe
    from convatlas.shared.tf_env import import_tf

    if check_backend() == "tensorflow":
        import_tf()
    log.info("convatlas worker process: %s", describe())


worker_init.connect(_log_config, weak=False)
celeryd_after_setup.connect(_log_backend, weak=False)
worker_process_init.connect(_init_tf, weak=False)


def _start_healer(**_: Any) -> None:
    """Every worker process watches the active runs; one at a time acts (a Redis lock)."""
    from convatlas.workers.completion import client
    from convatlas.workers.healer import Healer
    from convatlas.workers.resources import worker_storage

    redis_client = client()
    if redis_client is None:
        log.warning("no Redis for run progress: runs will not heal themselves")
        return
    Healer(app, worker_storage, redis_client).start()


worker_ready.connect(_start_healer, weak=False)


def _start_memory_guard(sender: Any = None, **_: Any) -> None:
    """Past ``CONVATLAS_WORKER_MAX_RSS``: drain and exit for a fresh worker (``memory_guard``)."""
    from convatlas.workers.memory_guard import start_guard

    start_guard(sender)


worker_ready.connect(_start_memory_guard, weak=False)


def _start_clock_guard(sender: Any = None, **_: Any) -> None:
    """A clock off the fleet's: take no tasks until it is right (``clock_guard``)."""
    from convatlas.workers.clock_guard import start_guard
    from convatlas.workers.completion import client

    start_guard(sender, client())


worker_ready.connect(_start_clock_guard, weak=False)
