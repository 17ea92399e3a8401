"""Fault-injection rigs: a real ``convatlas worker`` process per rig, on its own throwaway Redis
(so a test may restart it, and no other test's worker can take its tasks) and on the session's
SeaweedFS (or a private one, for tests that stop S3).

The fleet itself is ``convatlas.stack.harness.Fleet`` (the one harness of tests and benchmarks);
this module only adds what fault tests need: kill/restart the worker, short visibility timeouts,
and checks that every expected result exists, decodes and is listed exactly once in the report.

No fault test waits for a fixed number of seconds. Each wait is bounded by the mechanism that
must end it (``Rig.redelivery_bound``, ``Rig.heal_bound``, ``reconnect_bound``,
``retry_gap_bound``), and a run is followed by ``Rig.follow``: it fails as soon as no job gets
an outcome for longer than the test's stall bound, so a slow (busy) machine only makes a test
slower, while a lost message fails it within seconds of the bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
import subprocess
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from convatlas.producer.plans.plan import Plan
from convatlas.shared.images.decode import decode_image
from convatlas.shared.storage import S3Storage
from convatlas.stack.harness import REPO, Fleet
from convatlas.stack.servers import RabbitMQServer, RedisServer, SeaweedS3Server
from convatlas.workers.config import QUEUE
from convatlas.workers.healer import heal_interval


def wait_until(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``pred`` until truthy; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


BROKERS = ("redis", "rabbitmq")

# A rig's CONVATLAS_TASK_TIME_LIMIT, which must exceed its longest batch: the first one, which
# loads the model, took 31 s beside two CPU-bound processes on 2 cores (5 s idle).
TASK_TIME_LIMIT_S = 58

# Celery's consumer reconnects after 2, 4, 6 … s, at most 30 s apart (kombu's ensure_connection:
# interval_start 2, interval_step 2, interval_max 30).
RECONNECT_START_S, RECONNECT_STEP_S, RECONNECT_MAX_S = 2.0, 2.0, 30.0


def reconnect_bound(outage: float) -> float:
    """Seconds from losing the broker until the worker's reconnect attempt that follows an
    ``outage`` of that length (the first attempt at or after it, per Celery's retry schedule)."""
    at, interval = 0.0, RECONNECT_START_S
    while at < outage:
        at += interval
        interval = min(RECONNECT_MAX_S, interval + RECONNECT_STEP_S)
    return at


def retry_gap_bound(outage: float) -> float:
    """Seconds after an ``outage`` of a dependency (S3) until a task retrying it tries again:
    ``workers.tasks.backoff`` doubles from RETRY_BASE_S with ±25 % jitter, capped at RETRY_CAP_S,
    so the retry interval that spans the outage's end began before it and is at most 1.25 ×
    (the longest interval that can start within ``outage``)."""
    from convatlas.workers.tasks import RETRY_BASE_S, RETRY_CAP_S

    # interval k lasts 2^k·base·u (u ≤ 1.25) and starts at ≥ 0.75·base·(2^k − 1)
    longest = min(RETRY_CAP_S, outage / 0.75 + RETRY_BASE_S)
    return 1.25 * longest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every fault test on both brokers, except those about the Redis transport itself
    (marked ``redis_broker``)."""
    if "make_rig" in metafunc.fixturenames:
        only_redis = metafunc.definition.get_closest_marker("redis_broker") is not None
        metafunc.parametrize("broker", ["redis"] if only_redis else list(BROKERS))


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """A private RabbitMQ node for the session (the machine's own on 5672 is never used);
    each rig gets its own virtual host."""
    server = RabbitMQServer(tmp_path_factory.mktemp("rabbitmq"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Rig(Fleet):
    """A fleet under test (``convatlas.stack.harness.Fleet``) plus the fault hooks only tests use."""

    broker: str = "redis"

    # --- the mechanism settings of this fleet, and the bounds that follow from them ------------

    @property
    def visibility_timeout(self) -> float:
        return float(self.env["CONVATLAS_VISIBILITY_TIMEOUT"])

    @property
    def requeue_after(self) -> float:
        return float(self.env["CONVATLAS_REQUEUE_AFTER"])

    @property
    def task_time_limit(self) -> float:
        return float(self.env["CONVATLAS_TASK_TIME_LIMIT"])

    @property
    def restore_every(self) -> float:
        """How often kombu's restore sweep runs (``unacked_restore_interval`` × throttle)."""
        return (float(self.env["CONVATLAS_UNACKED_RESTORE_INTERVAL"])
                * float(self.env.get("CONVATLAS_UNACKED_RESTORE_THROTTLE", "1")))

    def batch_bound(self) -> float:
        """A queued job gets its outcome within the task time limit: longer than the longest
        batch by contract (CONVATLAS_TASK_TIME_LIMIT), and a task waiting longer for its batch
        times out and retries; plus the batch window and the first retry's backoff."""
        from convatlas.workers.tasks import RETRY_BASE_S

        return (self.task_time_limit + float(self.env["CONVATLAS_BATCH_WINDOW_MS"]) / 1000
                + 1.25 * RETRY_BASE_S)

    def run_deadline(self, jobs: int) -> float:
        """The most a healthy run of ``jobs`` may take: every batch holds at least one job and
        ends within the batch bound, then the report (one more task)."""
        return (jobs + 1) * self.batch_bound()

    def redelivery_bound(self) -> float:
        """A message held by a dead worker or connection is back in the Redis queue within the
        visibility timeout plus one restore sweep (RabbitMQ requeues it at once)."""
        return self.visibility_timeout + self.restore_every

    def heal_bound(self) -> float:
        """A lost message is queued again once its run made no progress for ``requeue_after``
        (the wait restarts at every new outcome), seen by a healer round, which runs every
        ``heal_interval(requeue_after)``."""
        return self.requeue_after + heal_interval(self.requeue_after)

    def follow(self, plan: Plan, stall_bound: float, *, counter: Any = None) -> Follower:
        """Start following ``plan``'s run as ``convatlas submit --wait`` does (``counter``:
        its Redis counters, as the CLI passes them); ``.report()`` watches it to the end."""
        return Follower(self, plan, stall_bound, counter)

    def queued(self) -> int:
        """Messages waiting in the task queue (not the ones a worker holds)."""
        if self.broker == "redis":
            return int(self.redis_client().llen(QUEUE))
        with self.app.connection_for_read() as conn:
            return int(conn.default_channel.queue_declare(QUEUE, passive=True).message_count)

    def held(self) -> int:
        """Messages a worker has taken and not acknowledged. Redis: kombu's unacked hash;
        RabbitMQ keeps that count to itself without the management plugin, so: the messages
        taken (received in the worker log) minus those finished."""
        if self.broker == "redis":
            return int(self.redis_client().hlen("unacked"))
        log = self.logs()
        return max(0, log.count("] received") - log.count("] succeeded"))

    def start_worker(self, wait_ready: bool = True) -> subprocess.Popen[bytes]:
        try:
            return super().start_worker(ready=wait_ready)
        except RuntimeError as exc:  # the worker died or hung while starting
            pytest.fail(str(exc))

    def kill_worker(self) -> None:
        """SIGKILL the worker's main process: no ack, no requeue, no goodbye. With the threads
        pool that process is the whole worker (there is no pool child to orphan)."""
        assert self.worker is not None and self.worker.poll() is None, "worker not running"
        self.worker.kill()
        self.worker.wait(10)


class Follower:
    """``wait_for_run`` in a thread, watched from the test: ``report()`` fails as soon as no
    job of the plan got a new outcome in storage, and no report came, for ``stall_bound``
    seconds. A busy machine makes a run slower, never stalled for longer than the mechanism
    that ends the stall allows."""

    def __init__(self, rig: Rig, plan: Plan, stall_bound: float, counter: Any = None) -> None:
        from convatlas.producer.submit import wait_for_run

        self.rig, self.plan, self.stall_bound = rig, plan, stall_bound
        self.waited: dict[str, Any] = {}

        def wait() -> None:
            try:  # every job, then the report, within stall_bound of the one before (the
                # watchdog's bound) makes this the most the whole run can take
                self.waited["report"] = wait_for_run(
                    rig.storage, plan.run_id, (len(plan.jobs) + 1) * stall_bound,
                    progress=False, counter=counter)
            except BaseException as exc:  # noqa: BLE001 (re-raised by report())
                self.waited["error"] = exc

        self.thread = threading.Thread(target=wait, daemon=True, name="follow-run")
        self.thread.start()

    def report(self, what: str = "", stall_bound: float | None = None) -> dict[str, Any]:
        """The run's report; ``stall_bound`` replaces the one given at the start (a test may
        only know it after its fault, e.g. from the outage it measured)."""
        from convatlas.producer.submit import read_report, run_progress
        from convatlas.shared.manifest import load_manifest
        from convatlas.shared.storage import StorageUnavailable

        bound = stall_bound or self.stall_bound
        storage, jobs = self.rig.storage, len(self.plan.jobs)
        manifest = load_manifest(storage, self.plan.run_id)
        done, since = -1, time.monotonic()
        while self.thread.is_alive():
            try:
                now_done = run_progress(storage, manifest)[0]
            except StorageUnavailable:  # S3 away: no progress seen, the clock runs on
                now_done = done
            if now_done != done:
                done, since = now_done, time.monotonic()
            stalled = time.monotonic() - since
            if stalled > bound and (done < jobs or read_report(storage, self.plan.run_id) is None):
                pytest.fail(f"run {self.plan.run_id} {what}: no progress for {stalled:.0f} s "
                            f"at {done}/{jobs} jobs (bound {bound:.0f} s)\n"
                            + self.rig.logs()[-3000:])
            self.thread.join(1.0)
        if "error" in self.waited:
            raise self.waited["error"]
        return self.waited["report"]


@pytest.fixture
def make_rig(
    s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory, broker: str,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Rig]]:
    """Factory: ``make_rig(visibility_timeout=…, concurrency=…, s3=…)`` → a started ``Rig``
    (task time limit: below the visibility timeout, at most ``TASK_TIME_LIMIT_S``)
    with a private password-protected Redis (its broker, or with ``broker == "rabbitmq"`` its
    result backend and progress store beside a private RabbitMQ virtual host); everything is
    stopped at teardown."""
    made: list[tuple[Rig, RabbitMQServer | None]] = []
    rabbit: RabbitMQServer | None = (
        request.getfixturevalue("rabbitmq_server") if broker == "rabbitmq" else None)

    def make(visibility_timeout: int = 60, concurrency: int = 16,
             s3: SeaweedS3Server | None = None, worker: bool = True,
             requeue_after: int = 300, persistent: bool = True,
             task_time_limit: int | None = None, env: dict[str, str] | None = None,
             node: RabbitMQServer | None = None) -> Rig:
        """``node``: a RabbitMQ node of the test's own (other settings) instead of the
        session's, for a RabbitMQ rig."""
        tmp = tmp_path_factory.mktemp("rig")
        node = node or rabbit if broker == "rabbitmq" else None
        redis = RedisServer(tmp / "redis", password=secrets.token_urlsafe(18),
                            persistent=persistent)
        redis.start()
        base = Fleet.create(redis, s3 or s3_server, tmp, db=0,
                            visibility_timeout=visibility_timeout, concurrency=concurrency,
                            prefix=f"fault-{uuid.uuid4().hex[:10]}",
                            extra_env={"CONVATLAS_TASK_TIME_LIMIT": str(
                                task_time_limit or min(visibility_timeout - 2, TASK_TIME_LIMIT_S)),
                                       "CONVATLAS_REQUEUE_AFTER": str(requeue_after),
                                       **_rabbit_env(node, redis, tmp.name),
                                       **(env or {})})
        rig = Rig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        rig.broker = broker
        made.append((rig, node))
        if worker:
            rig.start_worker()
        return rig

    try:
        yield make
    finally:
        for rig, node in made:
            rig.close()
            rig.redis.stop()
            if node is not None and node.running:  # the node stays lean over a session
                with contextlib.suppress(Exception):
                    node.ctl("delete_vhost", _vhost(rig.dir.name), timeout=30)


def _vhost(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _rabbit_env(rabbit: RabbitMQServer | None, redis: RedisServer, name: str) -> dict[str, str]:
    """Broker on a fresh RabbitMQ virtual host; results and run progress in the rig's Redis.
    The node is shared by the session. One that stopped answering is started again, with a
    warning that carries its log: the test that was running then has failed already, and the
    tests after it are about their own faults, not about a dead fixture."""
    if rabbit is None:
        return {}
    if not rabbit.answers():
        warnings.warn(f"RabbitMQ node {rabbit.node} stopped answering; started it again. "
                      f"Its log:\n{rabbit.node_log_tail()}", stacklevel=1)
        rabbit.restart()
    vhost = _vhost(name)
    rabbit.ctl("add_vhost", vhost)
    rabbit.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return {"CONVATLAS_BROKER_URL": rabbit.url[:-1] + vhost,
            "CONVATLAS_RESULT_BACKEND": redis.url}


# --- checks --------------------------------------------------------------------------------


def _item_key(item: dict[str, Any]) -> tuple[Any, ...]:
    if item["kind"] == "filter":
        return ("filter", item["layer"], item["filter"])
    return ("gradcam", item["image_sha256"])


def _job_key(job: Any) -> tuple[Any, ...]:
    if job.kind == "filter":
        return ("filter", job.layer, job.filter)
    return ("gradcam", job.image_sha)


def check_report(storage: S3Storage, plan: Plan, report: dict[str, Any],
                 failed: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Every job of ``plan`` is in the report exactly once; done ones have every output, each
    PNG decodes in full to the expected geometry; only the ``failed`` names failed."""
    seen = Counter(_item_key(i) for i in report["jobs"])
    assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1]
    assert set(seen) == {_job_key(j) for j in plan.jobs}
    assert report["complete"], report["counts"]
    by_key = {_item_key(i): i for i in report["jobs"]}
    inputs = {f.sha256: f.path for f in plan.inputs}
    for job in plan.jobs:
        item = by_key[_job_key(job)]
        if job.kind == "gradcam" and job.name in failed:
            assert item["status"] == "failed" and item["error"], item
            continue
        assert item["status"] == "done", item
        out = job.outputs()
        json.loads(storage.get_bytes(out["record"]))
        if job.kind == "filter":
            assert decode_image(storage.get_bytes(out["png"])).shape == (job.params.size, job.params.size, 3)
        else:
            h, w = decode_image(inputs[job.image_sha].read_bytes()).shape[:2]
            # the overlay at the photo's size (the default), heatmap.png at the model's 224
            assert decode_image(storage.get_bytes(out["overlay"])).shape == (h, w, 3), job.name
            assert decode_image(storage.get_bytes(out["heatmap"])).shape == (224, 224, 3), job.name
    for grid in plan.grids:
        info = json.loads(storage.get_bytes(grid.marker))
        assert info["missing"] == [], info
        side = decode_image(storage.get_bytes(grid.outputs()["png"])).shape
        assert side[0] == side[1] and side[2] == 3


def received(log: str, task: str) -> int:
    """How many times the worker logs say a task of this name was received."""
    return sum(1 for line in log.splitlines() if f"Task {task}[" in line and "] received" in line)


__all__ = ["REPO", "TASK_TIME_LIMIT_S", "Follower", "Rig", "check_report", "received",
           "reconnect_bound", "retry_gap_bound", "wait_until"]
