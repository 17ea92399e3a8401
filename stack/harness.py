"""The one fleet harness for tests and benchmarks: real servers, real ``convatlas worker``
processes, a producer app, all on loopback.

``Fleet`` wires a Redis and a SeaweedFS S3 (``convatlas.stack.servers``, started by the caller,
so several fleets can share one S3, or each have its own Redis) to worker processes started
with the same command line a user runs (``convatlas worker``). The integration tests and the
fault tests (which add their fault-injection hooks in ``tests/faults``) and the pipeline
benchmark (``bench/bench_pipeline.py``) build on it; ``convatlas stack``
(``supervisor.LocalStack``) is the long-lived, detachable stack for people.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from convatlas.shared.config import Settings
from convatlas.shared.storage import S3Storage
from convatlas.stack.servers import RedisServer, SeaweedS3Server

REPO = Path(__file__).resolve().parents[1]
BUCKET = "convatlas-test"


def fleet_env(
    redis: RedisServer, s3: SeaweedS3Server, prefix: str, cache: Path, db: int = 0,
    visibility_timeout: int = 60,
) -> dict[str, str]:
    """The environment of a fleet's workers and CLI subprocesses (this process's, minus any
    CONVATLAS_/AWS_ variable, plus the fleet's); kombu's restore sweep every second."""
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
    tls = redis.tls or s3.tls
    if tls:  # one CA signs both servers (``convatlas.stack.tls``)
        env["CONVATLAS_TLS_CA"] = str(tls.ca)
    return env


def settings_from(env: dict[str, str]) -> Settings:
    """The producer's settings for a fleet environment."""
    return dataclasses.replace(
        Settings.from_env(),
        broker_url=env["CONVATLAS_BROKER_URL"],
        result_backend=env.get("CONVATLAS_RESULT_BACKEND") or env["CONVATLAS_BROKER_URL"],
        s3_endpoint=env["CONVATLAS_S3_ENDPOINT"],
        s3_bucket=env["CONVATLAS_S3_BUCKET"],
        s3_prefix=env["CONVATLAS_S3_PREFIX"],
        cache_dir=Path(env["CONVATLAS_CACHE_DIR"]),
        visibility_timeout=int(env["CONVATLAS_VISIBILITY_TIMEOUT"]),
        tls_ca=env.get("CONVATLAS_TLS_CA", ""),
    )


def s3_storage(s3: SeaweedS3Server, prefix: str) -> S3Storage:
    return S3Storage(
        bucket=BUCKET, prefix=prefix, endpoint_url=s3.endpoint_url,
        access_key=s3.access_key, secret_key=s3.secret_key, create_bucket=True,
        ca_bundle=str(s3.tls.ca) if s3.tls else None,
    )


def start_worker(env: dict[str, str], log_path: Path, concurrency: int = 64) -> subprocess.Popen[bytes]:
    """``convatlas worker`` (the fleet CLI), which execs ``celery worker --pool threads``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "convatlas.producer.fleet_cli", "worker", "--concurrency",
             str(concurrency), "--loglevel", "info",
             "--hostname", f"fleet-{uuid.uuid4().hex[:6]}@%h"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )


def wait_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 90) -> None:
    """Until the worker logs `` ready.``; ``RuntimeError`` with its log if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while " ready." not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("worker did not start:\n" + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.1)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclasses.dataclass
class Fleet:
    """One fleet: its Redis, its S3, a worker process (replaceable), a producer app."""

    redis: RedisServer
    s3: SeaweedS3Server
    env: dict[str, str]
    settings: Settings
    storage: S3Storage
    app: Any
    dir: Path
    concurrency: int = 64
    worker: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @classmethod
    def create(cls, redis: RedisServer, s3: SeaweedS3Server, dir: Path, *, db: int = 0,
               visibility_timeout: int = 60, concurrency: int = 64, prefix: str | None = None,
               extra_env: dict[str, str] | None = None) -> Fleet:
        """A fleet on these servers under a fresh key prefix (no worker started yet)."""
        from convatlas.workers.config import make_app

        env = fleet_env(redis, s3, prefix or f"fleet-{uuid.uuid4().hex[:10]}", dir / "cache",
                        db=db, visibility_timeout=visibility_timeout)
        env.update(extra_env or {})
        settings = settings_from(env)
        return cls(redis, s3, env, settings, s3_storage(s3, settings.s3_prefix),
                   make_app(settings), dir, concurrency)

    @property
    def log_path(self) -> Path:
        return self.dir / f"worker-{self.starts}.log"

    def log(self) -> str:
        """The current worker's log."""
        return self.log_path.read_text(errors="replace")

    def logs(self) -> str:
        """All worker logs of this fleet (every restart), concatenated."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("worker-*.log")))

    def start_worker(self, ready: bool = True) -> subprocess.Popen[bytes]:
        self.starts += 1
        self.worker = start_worker(self.env, self.log_path, concurrency=self.concurrency)
        if ready:
            wait_ready(self.worker, self.log_path)
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            stop_worker(self.worker)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``python -m convatlas.producer.fleet_cli ARGS`` as a user would run it here."""
        return subprocess.run(
            [sys.executable, "-m", "convatlas.producer.fleet_cli", *args], cwd=REPO, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )

    def bucket_keys(self) -> set[str]:
        """Every key in the fleet's bucket (all prefixes), straight from S3."""
        pages = self.storage.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.storage.bucket)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    def redis_client(self, password: bool = True, db: int = 0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.redis.port, db=db,
                           password=self.redis.password if password else None,
                           socket_timeout=5, **self.redis.client_tls)

    def ping_worker(self) -> bool:
        """The worker answers a broadcast ping (it is alive and consuming)."""
        return bool(self.app.control.ping(timeout=2.0))

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.redis.password or "", self.s3.secret_key)

    def close(self) -> None:
        self.stop_worker()
        self.app.close()


def tiny_photo_folder(root: Path, n: int, seed: int) -> Path:
    """``n`` distinct 8×8 PNGs (a few hundred bytes each) in subfolders of 1 000: a big folder
    that costs the producer its per-photo work and nothing else (tests and benchmarks)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = root / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        ok, png = cv2.imencode(".png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        (sub / f"p{i:06d}.png").write_bytes(png.tobytes())
    return root
