"""Broker exhaustion: a Redis that refuses writes, because its disk is full (a failed RDB save on
a 16 MB tmpfs: ``MISCONF``) or its memory is (``maxmemory`` with ``noeviction``: ``OOM``).

The producer fails fast with a one-line reason (no traceback, no hang) and leaves nothing
half-queued that a re-submission cannot complete: results are content-addressed and counted
once (a bitmap in Redis), so re-submitting after recovery queues what is missing, and every
job ends with exactly one counted outcome, while the worker, which saw the same refusals,
carries on without a restart."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from convatlas.producer.plans.heatmaps import plan_heatmaps
from convatlas.producer.submit import read_report, submit_plan
from convatlas.shared.report import manifest_key
from convatlas.stack.harness import Fleet
from convatlas.stack.servers import RedisServer, SeaweedS3Server
from tests.faults.conftest import TASK_TIME_LIMIT_S, Rig, check_report, wait_until
from tests.faults.test_bad_input import _png
from tests.unit.test_images import photo

pytestmark = pytest.mark.redis_broker  # about Redis itself

PHOTOS = 6
SENT_BEFORE_FULL = 3  # the broker fills up after this many tasks of the first submission
# The CLI's own start (Python, Celery, boto3 imports: ~3 s idle, ~3x that on a busy machine)
# plus one connection attempt and Celery's publish retries (< 1 s): a refusal must come well
# within this, never after a timeout or retry loop.
FAIL_FAST_S = 30.0
MISCONF_MOUNT_MB = 16


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs for Redis's dir (we are root in CI and here); unmounted whatever happens."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MISCONF_MOUNT_MB}m", "tmpfs",
                        str(mnt)], capture_output=True, text=True, check=False)
    if r.returncode:
        pytest.fail(f"cannot mount a tmpfs (the test needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _rig(redis_dir: Path, s3: SeaweedS3Server, tmp: Path) -> Rig:
    """A rig (see ``conftest.make_rig``) whose Redis keeps its dir in ``redis_dir``."""
    server = RedisServer(redis_dir, password=secrets.token_urlsafe(18))
    server.start()
    base = Fleet.create(server, s3, tmp, concurrency=8, prefix=f"fault-{uuid.uuid4().hex[:10]}",
                        extra_env={"CONVATLAS_TASK_TIME_LIMIT": str(TASK_TIME_LIMIT_S),
                                   "CONVATLAS_REQUEUE_AFTER": "300"})
    return Rig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})


@pytest.fixture
def rigs(s3_server: SeaweedS3Server) -> Iterator[list[Rig]]:
    made: list[Rig] = []
    try:
        yield made
    finally:
        for rig in made:
            rig.close()
            rig.redis.stop()


def _photos(folder: Path) -> Path:
    folder.mkdir()
    for i in range(PHOTOS):
        (folder / f"p{i}.png").write_bytes(_png(photo(40 + i, 64, 100 + i)))
    return folder


def _fill(mnt: Path) -> Path:
    """Fill the tmpfs to the last byte."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # then the last partial pages
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    with pytest.raises(OSError) as exc:
        (mnt / "probe").write_bytes(b"x")
    assert exc.value.errno == errno.ENOSPC
    return filler


def _bgsave_status(admin: redis.Redis) -> str:
    return str(admin.info("persistence")["rdb_last_bgsave_status"])


def _bgsave(admin: redis.Redis, want: str) -> None:
    """BGSAVE now and wait for its outcome (a few ms for this tiny database)."""
    wait_until(lambda: not admin.info("persistence")["rdb_bgsave_in_progress"], 10,
               "an earlier BGSAVE to end")
    with contextlib.suppress(redis.ResponseError):  # "already in progress" after the retry
        admin.bgsave()
    wait_until(lambda: _bgsave_status(admin) == want
               and not admin.info("persistence")["rdb_bgsave_in_progress"], 10,
               f"BGSAVE to end with status {want}")


def _assert_fails_fast(rig: Rig, folder: Path, reason: str) -> str:
    """``convatlas submit`` refuses at once with a one-line reason and queues nothing."""
    queued = rig.queued()
    t0 = time.monotonic()
    r = rig.cli("submit", "heatmaps", str(folder), timeout=120)  # a hang fails here
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert took < FAIL_FAST_S, f"took {took:.0f} s: {out}"
    assert "Traceback" not in out, out
    assert reason in out and "refus" in out.lower(), out
    assert not any(s in out for s in rig.secrets if s)
    assert rig.queued() == queued
    return out


def _resubmit_completes(rig: Rig, folder: Path, plan: Any) -> None:
    """After recovery: one more submission, and every job ends with exactly one outcome."""
    wait = rig.run_deadline(PHOTOS)
    r = rig.cli("submit", "heatmaps", str(folder), "--wait", "--timeout", f"{wait:.0f}",
                timeout=wait + rig.batch_bound())
    assert r.returncode == 0, r.stdout + r.stderr + rig.logs()[-3000:]
    report = read_report(rig.storage, plan.run_id)
    check_report(rig.storage, plan, report)
    assert report["counts"]["done"] == PHOTOS
    records = [k for k in rig.storage.list_keys("results/") if k.endswith("/record.json")]
    assert len(records) == PHOTOS
    assert rig.ping_worker()  # the worker rode it out, no restart
    assert rig.starts == 1


def test_full_disk_misconf(rigs: list[Rig], s3_server: SeaweedS3Server, tiny_disk: Path,
                           tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("rig")
    rig = _rig(tiny_disk / "redis", s3_server, tmp)
    rigs.append(rig)
    rig.start_worker()
    folder = _photos(tmp / "photos")
    plan = plan_heatmaps([str(folder)], "efficientnet-lite0", None, None, rig.settings)
    admin = rig.redis_client()
    admin.config_set("save", "1 1")  # snapshots on: a failed one stops writes
    assert admin.config_get("stop-writes-on-bgsave-error")["stop-writes-on-bgsave-error"] == "yes"

    filler = _fill(tiny_disk)
    _bgsave(admin, "err")
    # redis-py drops the "MISCONF" code from the message once a worker module registered its
    # class in this process (workers.broker_refusals, imported by earlier tests): either form
    with pytest.raises(redis.ResponseError, match="MISCONF|unable to persist to disk"):
        admin.set("probe", 1)
    _assert_fails_fast(rig, folder, "MISCONF")
    assert not rig.storage.exists(manifest_key(plan.run_id))  # refused before anything

    filler.unlink()  # the disk has room again: the next snapshot succeeds, writes resume
    _bgsave(admin, "ok")
    admin.set("probe", 1)
    _resubmit_completes(rig, folder, plan)


class FillsUp:
    """The producer's Celery app, but Redis runs out of memory after ``SENT_BEFORE_FULL`` tasks
    (``maxmemory`` 1 byte, ``noeviction``): the submission breaks off half-way."""

    def __init__(self, app: Any, admin: redis.Redis) -> None:
        self.app, self.admin, self.sent = app, admin, 0

    def send_task(self, *args: Any, **kw: Any) -> Any:
        if self.sent == SENT_BEFORE_FULL:
            self.admin.config_set("maxmemory", "1")
        self.sent += 1
        return self.app.send_task(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


def test_out_of_memory_mid_submission(make_rig, tmp_path: Path) -> None:  # noqa: ANN001
    rig = make_rig(concurrency=8, persistent=False)
    folder = _photos(tmp_path / "photos")
    plan = plan_heatmaps([str(folder)], "efficientnet-lite0", None, None, rig.settings)
    admin = rig.redis_client()
    admin.config_set("maxmemory-policy", "noeviction")
    with pytest.raises(Exception, match="maxmemory") as exc:  # noqa: PT011 (kombu or redis-py's)
        submit_plan(plan, rig.storage, FillsUp(rig.app, admin), rig.settings)
    assert not isinstance(exc.value, TimeoutError)
    assert rig.storage.exists(manifest_key(plan.run_id))  # half-way: a manifest, some tasks
    _assert_fails_fast(rig, folder, "maxmemory")

    admin.config_set("maxmemory", "0")  # memory again
    _resubmit_completes(rig, folder, plan)  # the half-queued tasks too: the same outputs
