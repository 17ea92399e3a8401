"""Per-process resources of a worker (its storage), shared by the tasks and the healer."""

from __future__ import annotations

import threading

from convatlas.shared.config import Settings
from convatlas.shared.storage import Storage, storage_from_settings

_storage: Storage | None = None
_storage_lock = threading.Lock()


def worker_storage() -> Storage:
    """The storage of this worker process (S3, or ``CONVATLAS_STORAGE_DIR``), from the
    environment (created once)."""
    global _storage
    with _storage_lock:
        if _storage is None:
            _storage = storage_from_settings(Settings.from_env())
        return _storage
