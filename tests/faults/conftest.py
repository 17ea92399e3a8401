"""Fault-injection rigs: a real ``convatlas worker`` process per rig, on its own throwaway Redis
(so a test may restart it, and no other test's worker can take its tasks) and on the session's
SeaweedFS (or a private one, for tests that stop S3).

The fleet itself is ``convatlas.stack.harness.Fleet`` (the one harness of tests and benchmarks);
this module only adds what fault tests need: kill/restart the worker, short visibility timeouts,
and checks that every expected result exists, decodes and is listed exactly once in the report.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import subprocess
import time
import uuid
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

WAIT_S = 150.0


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


@pytest.fixture
def make_rig(
    s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory, broker: str,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Rig]]:
    """Factory: ``make_rig(visibility_timeout=…, concurrency=…, s3=…)`` → a started ``Rig``
    with a private password-protected Redis (its broker, or with ``broker == "rabbitmq"`` its
    result backend and progress store beside a private RabbitMQ virtual host); everything is
    stopped at teardown."""
    made: list[Rig] = []
    rabbit: RabbitMQServer | None = (
        request.getfixturevalue("rabbitmq_server") if broker == "rabbitmq" else None)

    def make(visibility_timeout: int = 60, concurrency: int = 16,
             s3: SeaweedS3Server | None = None, worker: bool = True,
             requeue_after: int = 300, persistent: bool = True) -> Rig:
        tmp = tmp_path_factory.mktemp("rig")
        redis = RedisServer(tmp / "redis", password=secrets.token_urlsafe(18),
                            persistent=persistent)
        redis.start()
        base = Fleet.create(redis, s3 or s3_server, tmp, db=0,
                            visibility_timeout=visibility_timeout, concurrency=concurrency,
                            prefix=f"fault-{uuid.uuid4().hex[:10]}",
                            extra_env={"CONVATLAS_TASK_TIME_LIMIT": str(max(1, visibility_timeout - 2)),
                                       "CONVATLAS_REQUEUE_AFTER": str(requeue_after),
                                       **_rabbit_env(rabbit, redis, tmp.name)})
        rig = Rig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        rig.broker = broker
        made.append(rig)
        if worker:
            rig.start_worker()
        return rig

    try:
        yield make
    finally:
        for rig in made:
            rig.close()
            rig.redis.stop()


def _rabbit_env(rabbit: RabbitMQServer | None, redis: RedisServer, name: str) -> dict[str, str]:
    """Broker on a fresh RabbitMQ virtual host; results and run progress in the rig's Redis."""
    if rabbit is None:
        return {}
    vhost = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    for cmd in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", "-n", rabbit.node, *cmd], env=rabbit._env(),
                       check=True, capture_output=True, timeout=60)
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


__all__ = ["REPO", "WAIT_S", "Rig", "check_report", "received", "wait_until"]
