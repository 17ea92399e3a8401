"""Security: the worker never unpickles, Redis needs its password, and secrets never leak into
logs, Redis (queue, results) or the run's report and gallery.

Flower is not installed in this venv, so its /api/tasks output is not checked here; what Flower
would show comes from the same task events and result keys scanned below."""

from __future__ import annotations

import json
import os
import pickle
import re
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
