"""Staging a run in storage: the input photos under their content hash, and the manifest.

Shared by the local runner and the fleet producer, so both lay out a run the same way.
"""

from __future__ import annotations

import hashlib
import json

from convatlas.producer.plan import Plan, PlanError
from convatlas.shared import keys
from convatlas.shared.report import manifest_key
from convatlas.shared.storage import Storage


def upload_inputs(plan: Plan, storage: Storage) -> int:
    """Put each distinct photo under ``inputs/<sha>`` unless it is there; one file in memory at
    a time. A file changed since planning is refused (its key would no longer match)."""
    n = 0
    for f in {f.sha256: f for f in plan.inputs}.values():
        key = keys.input_key(f.sha256)
        if storage.exists(key):
            continue
        data = f.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise PlanError(f"{f.name} changed while being submitted; submit again")
        storage.put_bytes(key, data, "application/octet-stream")
        del data
        n += 1
    return n


def write_manifest(plan: Plan, storage: Storage) -> None:
    storage.put_bytes(manifest_key(plan.run_id), json.dumps(plan.manifest(), indent=2).encode(),
                      "application/json")
