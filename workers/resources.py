"""Per-process resources of a worker (its S3 storage), shared by the tasks and the healer."""

from __future__ import annotations

import threading

from convatlas.shared.config import Settings
from convatlas.shared.storage import Storage, s3_storage_from_settings

_storage: Storage | None = None
_storage_lock = threading.Lock()


def worker_storage() -> Storage:
    """The S3 storage of this worker process, from the environment (created once)."""
    global _storage
    with _storage_lock:
        if _storage is None:
            _storage = s3_storage_from_settings(Settings.from_env())
        return _storage
