"""What every job kind shares: the result type, markers in storage, JSON/NumPy bytes, overlapped I/O.

A job is a small JSON-able description; its outputs live under a key derived from it
(``convatlas.shared.keys``), so a job whose outputs exist is skipped. Each job writes its data files
first and a small JSON marker last; the marker's presence means "done" (``record.json``) or
"failed for good" (``error.json``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from convatlas.shared.storage import ObjectNotFound, Storage


class Job(Protocol):
    """The interface every job kind implements (``FilterJob``, ``GradcamJob``, ``ExamplesJob``:
    the entries of ``convatlas.shared.jobs.kinds.KINDS``)."""

    kind: str  # a key of ``convatlas.shared.jobs.kinds.KINDS``

    @property
    def marker(self) -> str: ...

    @property
    def error_key(self) -> str: ...

    def outputs(self) -> dict[str, str]: ...

    def to_dict(self) -> dict[str, Any]: ...

    def outcome_folders(self) -> tuple[str, str]: ...


@dataclass
class JobResult:
    status: str  # "done" | "skipped" (already done) | "failed"
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


T = TypeVar("T")
R = TypeVar("R")
IO_THREADS = 8  # storage round trips overlap; the model waits for them otherwise


def io_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` with storage calls overlapped in threads (order kept; the
    first exception, e.g. ``StorageUnavailable``, propagates as in the plain loop)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(IO_THREADS, len(items)), thread_name_prefix="convatlas-io") as ex:
        return list(ex.map(fn, items))


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def read_json(storage: Storage, key: str) -> dict[str, Any] | None:
    """A JSON object, or None when it does not exist: one GET, not a HEAD then a GET."""
    try:
        return json.loads(storage.get_bytes(key))
    except ObjectNotFound:
        return None


def existing_result(job: Job, storage: Storage) -> JobResult | None:
    """The recorded outcome of a job, if it has one (done or failed for good)."""
    info = read_json(storage, job.marker)
    if info is not None:
        return JobResult("skipped", job.outputs(), None, info)
    err = read_json(storage, job.error_key)
    if err is not None:
        return JobResult("failed", {}, err.get("error", "failed"), err)
    return None


def record_failure(job: Job, storage: Storage, error: str) -> JobResult:
    """A permanent failure (bad input): recorded so reports and re-runs see it."""
    storage.put_bytes(
        job.error_key, json_bytes({"error": error, "job": job.to_dict()}), "application/json"
    )
    return JobResult("failed", {}, error)
