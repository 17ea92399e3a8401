"""Staging a run in storage: the input photos under their content hash, and the manifest.

Shared by the local runner and the fleet producer, so both lay out a run the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from convatlas.producer.plans.plan import InputFile, Plan, PlanError
from convatlas.shared import keys
from convatlas.shared.manifest import write_header, write_shard
from convatlas.shared.storage import Storage

UPLOAD_THREADS = 8  # photos read and uploaded at once (S3 round trips overlap)


def upload_inputs(plan: Plan | Iterable[InputFile], storage: Storage) -> int:
    """Put each distinct photo under ``inputs/<sha>`` unless it is there, ``UPLOAD_THREADS``
    at a time (at most that many files in memory). A file changed since planning is refused
    (its key would no longer match)."""
    files = list({f.sha256: f for f in (plan.inputs if isinstance(plan, Plan) else plan)}.values())
    if len(files) <= 1:
        return sum(_upload_one(f, storage) for f in files)
    with ThreadPoolExecutor(min(UPLOAD_THREADS, len(files)), "convatlas-upload") as pool:
        return sum(pool.map(lambda f: _upload_one(f, storage), files))


def _upload_one(f: InputFile, storage: Storage) -> int:
    key = keys.input_key(f.sha256)
    if storage.exists(key):
        return 0
    data = f.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != f.sha256:
        raise PlanError(f"{f.name} changed while being submitted; submit again")
    storage.put_bytes(key, data, "application/octet-stream")
    return 1


def write_manifest(plan: Plan, storage: Storage) -> None:
    """The header, then every shard (``convatlas.shared.manifest``)."""
    write_header(storage, plan.header())
    for n, shard in enumerate(plan.shards()):
        write_shard(storage, plan.run_id, n, shard.to_dict())
