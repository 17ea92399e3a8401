"""Settings read from the environment (12-factor), with documented defaults.

Every knob of convatlas is an environment variable; this module is the one place that reads
them, so the README's configuration table and the code cannot drift apart. Secrets (S3 keys, the
Redis password inside the broker URL) are never stored here in printable form: use
``Settings.redacted()`` for logging.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convatlas"


@dataclass(frozen=True)
class Settings:
    """All configuration. Build with ``Settings.from_env()``."""

    broker_url: str = ""  # CONVATLAS_BROKER_URL; empty = no fleet, local mode only
    result_backend: str = ""  # CONVATLAS_RESULT_BACKEND; defaults to the broker URL
    s3_endpoint: str = ""  # CONVATLAS_S3_ENDPOINT; empty = AWS default endpoint
    s3_bucket: str = "convatlas"  # CONVATLAS_S3_BUCKET
    s3_prefix: str = "convatlas"  # CONVATLAS_S3_PREFIX
    s3_region: str = "us-east-1"  # CONVATLAS_S3_REGION
    storage_dir: str = ""  # CONVATLAS_STORAGE_DIR: a local directory instead of S3 (one host)
    cache_dir: Path = field(default_factory=default_cache_dir)  # CONVATLAS_CACHE_DIR
    max_pixels: int = 100_000_000  # CONVATLAS_MAX_PIXELS: decompression-bomb limit
    vgg16_weights: str = ""  # CONVATLAS_VGG16_WEIGHTS: path to ImageNet VGG16 .h5
    batch_window_ms: int = 50  # CONVATLAS_BATCH_WINDOW_MS: worker gathers jobs this long
    max_batch: int = 64  # CONVATLAS_MAX_BATCH: most jobs in one model call
    worker_concurrency: int = 0  # CONVATLAS_WORKER_CONCURRENCY: task threads, 0 = 2 × max_batch
    task_time_limit: int = 1800  # CONVATLAS_TASK_TIME_LIMIT seconds (hard)
    visibility_timeout: int = 3600  # CONVATLAS_VISIBILITY_TIMEOUT seconds (> longest task)
    presign_expiry: int = 86400  # CONVATLAS_PRESIGN_EXPIRY seconds for gallery links
    precision: str = "float32"  # CONVATLAS_PRECISION: default --precision (float32 | bfloat16)
    progress_url: str = ""  # CONVATLAS_PROGRESS_URL: Redis for run progress (result backend/broker)
    requeue_after: int = 300  # CONVATLAS_REQUEUE_AFTER: s without progress before the healer requeues
    overlay_format: str = "jpeg"  # CONVATLAS_OVERLAY_FORMAT: jpeg | png | webp
    overlay_max_side: int = 0  # CONVATLAS_OVERLAY_MAX_SIDE: overlay's longest side, 0 = original
    tls_ca: str = ""  # CONVATLAS_TLS_CA: CA bundle that signs rediss:// and https S3 servers

    @classmethod
    def from_env(cls) -> Settings:
        broker = _env("CONVATLAS_BROKER_URL", "")
        return cls(
            broker_url=broker,
            result_backend=_env("CONVATLAS_RESULT_BACKEND", broker),
            s3_endpoint=_env("CONVATLAS_S3_ENDPOINT", ""),
            s3_bucket=_env("CONVATLAS_S3_BUCKET", "convatlas"),
            s3_prefix=_env("CONVATLAS_S3_PREFIX", "convatlas").strip("/"),
            s3_region=_env("CONVATLAS_S3_REGION", "us-east-1"),
            storage_dir=_env("CONVATLAS_STORAGE_DIR", ""),
            cache_dir=Path(_env("CONVATLAS_CACHE_DIR", str(default_cache_dir()))),
            max_pixels=int(_env("CONVATLAS_MAX_PIXELS", "100000000")),
            vgg16_weights=_env("CONVATLAS_VGG16_WEIGHTS", ""),
            batch_window_ms=int(_env("CONVATLAS_BATCH_WINDOW_MS", "50")),
            max_batch=int(_env("CONVATLAS_MAX_BATCH", "64")),
            worker_concurrency=int(_env("CONVATLAS_WORKER_CONCURRENCY", "0")),
            task_time_limit=int(_env("CONVATLAS_TASK_TIME_LIMIT", "1800")),
            visibility_timeout=int(_env("CONVATLAS_VISIBILITY_TIMEOUT", "3600")),
            presign_expiry=int(_env("CONVATLAS_PRESIGN_EXPIRY", "86400")),
            precision=_env("CONVATLAS_PRECISION", "float32"),
            progress_url=_env("CONVATLAS_PROGRESS_URL", ""),
            requeue_after=int(_env("CONVATLAS_REQUEUE_AFTER", "300")),
            overlay_format=_env("CONVATLAS_OVERLAY_FORMAT", "jpeg"),
            overlay_max_side=int(_env("CONVATLAS_OVERLAY_MAX_SIDE", "0")),
            tls_ca=_env("CONVATLAS_TLS_CA", ""),
        )

    def redacted(self) -> dict[str, object]:
        """A printable view with passwords removed from URLs."""
        out = asdict(self)
        for k in ("broker_url", "result_backend", "progress_url"):
            out[k] = redact_url(str(out[k]))
        out["cache_dir"] = str(out["cache_dir"])
        return out


def redact_url(url: str) -> str:
    """``redis://:secret@host`` → ``redis://:***@host``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
