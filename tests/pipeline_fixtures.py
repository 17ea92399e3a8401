"""Fixtures for the end-to-end fleet tests: a real ``celery worker`` process (threads pool)
on the session's Redis and SeaweedFS, and a producer pointed at the same servers."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convatlas.shared.config import Settings
from convatlas.shared.storage import S3Storage
from convatlas.stack.servers import RedisServer, SeaweedS3Server

REPO = Path(__file__).resolve().parent.parent
BUCKET = "convatlas-test"
REDIS_DB = 11  # this module's own databases (11, 12): other tests' workers must not take
# its tasks


@dataclasses.dataclass
class Fleet:
    env: dict[str, str]  # environment of the worker and of CLI subprocesses
    settings: Settings
    storage: S3Storage
    app: Any
    worker: subprocess.Popen[bytes]
    log_path: Path
    secrets: tuple[str, ...]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``python -m convatlas.producer.fleet_cli ARGS`` with the fleet's environment."""
        return subprocess.run(
            [sys.executable, "-m", "convatlas.producer.fleet_cli", *args], cwd=REPO, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )


def fleet_env(
    redis: RedisServer, s3: SeaweedS3Server, prefix: str, cache: Path, db: int = REDIS_DB,
    visibility_timeout: int = 60,
) -> dict[str, str]:
    broker = redis.url.rsplit("/", 1)[0] + f"/{db}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONVATLAS_"))}
    env.update(
        CONVATLAS_BROKER_URL=broker,
        CONVATLAS_S3_ENDPOINT=s3.endpoint_url,
        CONVATLAS_S3_BUCKET=BUCKET,
        CONVATLAS_S3_PREFIX=prefix,
        CONVATLAS_CACHE_DIR=str(cache),
        CONVATLAS_VISIBILITY_TIMEOUT=str(visibility_timeout),
        CONVATLAS_UNACKED_RESTORE_INTERVAL="1",
        CONVATLAS_BATCH_WINDOW_MS="200",
        CONVATLAS_MAX_BATCH="64",
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=s3.secret_key,
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def settings_from(env: dict[str, str]) -> Settings:
    base = Settings.from_env()
    return dataclasses.replace(
        base,
        broker_url=env["CONVATLAS_BROKER_URL"],
        result_backend=env["CONVATLAS_BROKER_URL"],
        s3_endpoint=env["CONVATLAS_S3_ENDPOINT"],
        s3_bucket=env["CONVATLAS_S3_BUCKET"],
        s3_prefix=env["CONVATLAS_S3_PREFIX"],
        cache_dir=Path(env["CONVATLAS_CACHE_DIR"]),
        visibility_timeout=int(env["CONVATLAS_VISIBILITY_TIMEOUT"]),
    )


def start_worker(env: dict[str, str], log_path: Path, concurrency: int = 64) -> subprocess.Popen[bytes]:
    """``convatlas worker`` (the fleet CLI), which execs ``celery worker --pool threads``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "convatlas.producer.fleet_cli", "worker", "--concurrency",
             str(concurrency), "--loglevel", "info",
             "--hostname", f"pipeline-{uuid.uuid4().hex[:6]}@%h"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )


def wait_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 90) -> None:
    """Until the worker logs `` ready.``; fail with its log if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while " ready." not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("worker did not start:\n" + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.1)


def s3_storage(s3: SeaweedS3Server, prefix: str) -> S3Storage:
    return S3Storage(
        bucket=BUCKET, prefix=prefix, endpoint_url=s3.endpoint_url,
        access_key=s3.access_key, secret_key=s3.secret_key, create_bucket=True,
    )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    from convatlas.workers.config import make_app

    tmp = tmp_path_factory.mktemp("fleet")
    env = fleet_env(redis_server, s3_server, f"pipe-{uuid.uuid4().hex[:10]}", tmp / "cache")
    settings = settings_from(env)
    storage = s3_storage(s3_server, settings.s3_prefix)
    app = make_app(settings)
    app.control.purge()  # leftovers of an interrupted earlier session in this database
    log_path = tmp / "worker.log"
    worker = start_worker(env, log_path)
    wait_ready(worker, log_path)
    f = Fleet(env, settings, storage, app, worker, log_path,
              (redis_server.password or "", s3_server.secret_key))
    try:
        yield f
    finally:
        stop_worker(worker)
        app.close()
