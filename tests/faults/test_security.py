"""Security: the worker never unpickles, Redis needs its password, and secrets never leak into
logs, Redis (queue, results) or the run's report and gallery.

Flower is not installed in this venv, so its /api/tasks output is not checked here; what Flower
would show comes from the same task events and result keys scanned below."""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from convatlas.shared.report import gallery_key, manifest_key, report_key
from convatlas.workers.config import QUEUE
from tests.faults.conftest import wait_until

pytestmark = pytest.mark.redis_broker  # about the Redis transport itself

class Payload:
    """Unpickling this runs ``touch <marker>``: proof of code execution if it ever happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_message_is_refused_and_never_runs(make_rig, tmp_path: Path) -> None:  # noqa: ANN001
    rig = make_rig()
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))  # the payload does work when unpickled...
    assert probe.exists()
    marker = tmp_path / "pwned"
    evil = Celery("evil", broker=rig.env["CONVATLAS_BROKER_URL"])
    evil.conf.update(task_serializer="pickle", accept_content=["pickle"])
    evil.send_task("convatlas.gradcam", args=[Payload(marker)], queue=QUEUE)
    evil.close()
    # a ready worker takes a queued message at its next poll, well within one batch bound
    wait_until(lambda: "untrusted content" in rig.logs(), rig.batch_bound(),
               "the worker to refuse the message")
    log = rig.logs()
    assert re.search(r"[Rr]efusing to deserialize untrusted content of type pickle", log)
    assert not marker.exists()  # ...and the worker never unpickled it
    assert rig.redis_client().llen(QUEUE) == 0  # dropped, not redelivered forever
    assert rig.ping_worker()


def test_redis_refuses_clients_without_the_password(make_rig) -> None:  # noqa: ANN001
    rig = make_rig(worker=False)
    assert rig.redis_client().ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError), match="(?i)auth"):
        rig.redis_client(password=False).ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError), match="(?i)auth"):
        rig.redis_client(password=False).llen(QUEUE)


def _redis_dump(client: redis.Redis) -> str:
    """Every key and value of the database as text (queue, unacked, results, chords…)."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            val: Any = client.get(key)
        elif kind == "list":
            val = client.lrange(key, 0, -1)
        elif kind == "hash":
            val = client.hgetall(key)
        elif kind == "set":
            val = client.smembers(key)
        elif kind == "zset":
            val = client.zrange(key, 0, -1, withscores=True)
        else:
            val = kind
        out.append(f"{key!r} {val!r}")
    return "\n".join(out)


def test_secrets_never_leak(make_rig, tmp_path: Path) -> None:  # noqa: ANN001
    """A complete run (one photo fails), then every place a secret could end up is scanned."""
    rig = make_rig()
    photos = tmp_path / "photos"
    photos.mkdir()
    from tests.faults.test_bad_input import _png
    from tests.unit.test_images import photo

    for i in range(3):
        (photos / f"p{i}.png").write_bytes(_png(photo(48, 64, i)))
    (photos / "bad.jpg").write_bytes(b"not a jpeg at all" * 5)
    wait = rig.run_deadline(4)  # 4 photos, at most one job per batch
    r = rig.cli("submit", "heatmaps", str(photos), "--wait", "--timeout", f"{wait:.0f}",
                timeout=wait + rig.batch_bound())  # + the CLI's own start
    assert r.returncode == 1 and "3 done, 1 failed" in r.stdout, r.stdout + r.stderr
    run_id = re.search(r"run (\S+):", r.stdout).group(1)
    st = rig.storage
    places = {
        "worker log": rig.logs(),
        "cli output": r.stdout + r.stderr,
        "redis": _redis_dump(rig.redis_client()),
        "report": st.get_bytes(report_key(run_id)).decode(),
        "gallery": st.get_bytes(gallery_key(run_id)).decode(),
        "manifest": st.get_bytes(manifest_key(run_id)).decode(),
    }
    assert "celery-task-meta-" in places["redis"]  # the scan did see task results
    assert json.loads(places["report"])["counts"]["done"] == 3
    for secret in rig.secrets:
        assert len(secret) >= 16
        leaked = [where for where, text in places.items() if secret in text]
        assert not leaked, f"a secret appears in {leaked}"


# --- least privilege: one Redis ACL user and one S3 identity per role ------------------------


@pytest.fixture
def acl_redis(tmp_path: Path) -> Any:
    from convatlas.stack.redis_acl import ROLES
    from convatlas.stack.servers import RedisServer

    server = RedisServer(tmp_path / "redis", password=secrets.token_urlsafe(18),
                         users={r: secrets.token_urlsafe(18) for r in ROLES})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _as(server: Any, role: str) -> redis.Redis:
    return redis.Redis.from_url(server.role_url(role), socket_timeout=5)


def test_redis_roles_are_refused_what_they_do_not_need(acl_redis: Any) -> None:
    admin = redis.Redis(port=acl_redis.port, password=acl_redis.password, socket_timeout=5)
    admin.set("operator-only", "x")
    worker, producer, flower = (_as(acl_redis, r) for r in ("worker", "producer", "flower"))
    assert worker.ping() and producer.ping() and flower.ping()
    for who in (worker, producer, flower):
        for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                        ("MONITOR",), ("SHUTDOWN", "NOSAVE"), ("ACL", "LIST")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                who.execute_command(*command)
        with pytest.raises(redis.exceptions.NoPermissionError):
            who.get("operator-only")  # a key outside the role's patterns
    # the producer queues and counts, but never touches what the workers hold
    producer.lpush(QUEUE, "m")
    with pytest.raises(redis.exceptions.NoPermissionError):
        producer.hgetall("unacked")
    # Flower reads the queue's length, never its messages, and writes no result
    assert flower.llen(QUEUE) == 1
    for write in (lambda: flower.lpush(QUEUE, "x"), lambda: flower.rpop(QUEUE),
                  lambda: flower.set("celery-task-meta-x", "{}")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()
    assert worker.rpop(QUEUE) == b"m"  # the worker consumes
    assert admin.get("operator-only") == b"x" and admin.dbsize() >= 1  # nothing was flushed


@pytest.fixture(scope="module")
def role_s3(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from convatlas.stack.s3_identities import ROLES, role_actions
    from convatlas.stack.servers import SeaweedS3Server

    server = SeaweedS3Server(tmp_path_factory.mktemp("s3roles"),
                             roles={r: role_actions(r, ROLE_BUCKET, ROLE_PREFIX) for r in ROLES})
    server.start()
    try:
        yield server
    finally:
        server.stop()


ROLE_BUCKET, ROLE_PREFIX = "convatlas-roles", "fleet"


def _s3_as(server: Any, keys: tuple[str, str]) -> Any:
    from convatlas.shared.storage import S3Storage

    return S3Storage(ROLE_BUCKET, prefix=ROLE_PREFIX, endpoint_url=server.endpoint_url,
                     access_key=keys[0], secret_key=keys[1])


def test_s3_roles_write_only_their_own_prefixes(role_s3: Any) -> None:
    from botocore.exceptions import ClientError

    from convatlas.shared.storage import StorageError
    from convatlas.stack.s3_identities import protect_bucket

    admin = _s3_as(role_s3, (role_s3.access_key, role_s3.secret_key))
    admin.ensure_bucket()
    protect_bucket(admin.client, ROLE_BUCKET, ROLE_PREFIX)  # as the stack and compose do
    admin.put_bytes("inputs/ab/photo", b"photo")
    producer = _s3_as(role_s3, role_s3.role_keys["producer"])
    worker = _s3_as(role_s3, role_s3.role_keys["worker"])
    assert "flower" not in role_s3.role_keys  # Flower gets no S3 identity at all

    def refused(action: Any) -> None:
        with pytest.raises((ClientError, StorageError), match="(?i)denied|403|forbidden"):
            action()

    # the producer writes inputs and manifests, reads results, never writes them
    producer.put_bytes("inputs/cd/photo2", b"p2")
    producer.put_bytes("runs/r1/manifest.json", b"{}")
    refused(lambda: producer.put_bytes("results/m/x.png", b"forged"))
    # the worker reads inputs and writes results; it cannot alter or delete inputs
    assert worker.get_bytes("inputs/ab/photo") == b"photo"
    worker.put_bytes("results/m/x.png", b"png")
    refused(lambda: worker.put_bytes("inputs/ab/photo", b"swapped"))
    refused(lambda: worker.client.delete_object(Bucket=ROLE_BUCKET, Key=f"{ROLE_PREFIX}/inputs/ab/photo"))
    refused(lambda: producer.client.delete_object(Bucket=ROLE_BUCKET, Key=f"{ROLE_PREFIX}/results/m/x.png"))
    # the bucket policy: nobody deletes a record, not even in its own write prefix (SeaweedFS's
    # Write includes delete); only a run's marker and stale summaries can go
    refused(lambda: worker.client.delete_object(Bucket=ROLE_BUCKET, Key=f"{ROLE_PREFIX}/results/m/x.png"))
    refused(lambda: producer.client.delete_object(Bucket=ROLE_BUCKET, Key=f"{ROLE_PREFIX}/inputs/cd/photo2"))
    refused(lambda: producer.client.delete_object(Bucket=ROLE_BUCKET, Key=f"{ROLE_PREFIX}/runs/r1/manifest.json"))
    refused(lambda: admin.client.delete_object(Bucket=ROLE_BUCKET, Key=f"{ROLE_PREFIX}/results/m/x.png"))
    worker.put_bytes("atlas/m/index.html", b"<html>")
    refused(lambda: worker.client.delete_object(Bucket=ROLE_BUCKET, Key=f"{ROLE_PREFIX}/atlas/m/index.html"))
    for role in (producer, worker):
        role.put_bytes("runs/active/r1", b"")
        role.delete("runs/active/r1")
        assert not role.exists("runs/active/r1")
    for key in ("runs/r1/report.json", "runs/r1/examples.json", "atlas/m.json"):
        producer.put_bytes(key, b"{}")
        producer.delete(key)
        assert not producer.exists(key)
    assert producer.exists("runs/r1/manifest.json")
    # no Admin: neither creates nor deletes buckets, nor writes outside the fleet's prefix
    for role in (producer, worker):
        refused(lambda r=role: r.client.create_bucket(Bucket="convatlas-other"))
        refused(lambda r=role: r.client.delete_bucket(Bucket=ROLE_BUCKET))
        refused(lambda r=role: r.client.put_object(Bucket=ROLE_BUCKET, Key="elsewhere", Body=b"x"))
    assert admin.get_bytes("inputs/ab/photo") == b"photo"
    assert admin.get_bytes("results/m/x.png") == b"png"
