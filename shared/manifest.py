"""A run's manifest in storage: a small header and its jobs in shards.

A folder of 10^5 photos is 10^5 jobs; one JSON document of all of them is too big to build,
write or read in one piece (about 0.7 GiB of producer memory at 10^5 photos). So
``runs/<id>/manifest.json`` holds only what is small (run id, kind, model, the grid pages, counts
and the number of shards) and ``runs/<id>/manifest/shard-NNNNN.json`` hold the jobs, input files
and refused files, ``SHARD_SIZE`` entries each. Writers and readers handle one shard at a time.
Manifests written before sharding (every job inline under ``jobs``) are read the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from convatlas.shared import keys
from convatlas.shared.storage import Storage

SHARD_SIZE = 1000  # entries (jobs, inputs and refused files together) per shard
SECTIONS = ("jobs", "inputs", "rejected")


def manifest_key(run_id: str) -> str:
    return f"{keys.run_prefix(run_id)}/manifest.json"


def shard_key(run_id: str, n: int) -> str:
    return f"{keys.run_prefix(run_id)}/manifest/shard-{n:05d}.json"


def load_manifest(storage: Storage, run_id: str) -> dict[str, Any]:
    """The header (or, for an old run, the whole inline manifest)."""
    return json.loads(storage.get_bytes(manifest_key(run_id)))


def write_header(storage: Storage, header: dict[str, Any]) -> None:
    storage.put_bytes(manifest_key(header["run_id"]), json.dumps(header, indent=1).encode(),
                      "application/json")


def write_shard(storage: Storage, run_id: str, n: int, shard: dict[str, Any]) -> None:
    storage.put_bytes(shard_key(run_id, n), json.dumps(shard, separators=(",", ":")).encode(),
                      "application/json")


def job_count(manifest: dict[str, Any]) -> int:
    return int(manifest["jobs_total"]) if "jobs_total" in manifest else len(manifest["jobs"])


def rejected_count(manifest: dict[str, Any]) -> int:
    if "rejected_total" in manifest:
        return int(manifest["rejected_total"])
    return len(manifest.get("rejected", []))


def iter_shards(storage: Storage, manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each shard in order: ``{"offset": index of its first job, "jobs", "inputs", "rejected"}``."""
    if "shards" not in manifest:  # an inline manifest: one shard
        yield {"offset": 0, **{s: manifest.get(s, []) for s in SECTIONS}}
        return
    for n in range(int(manifest["shards"])):
        yield json.loads(storage.get_bytes(shard_key(manifest["run_id"], n)))


def iter_section(storage: Storage, manifest: dict[str, Any], section: str) -> Iterator[Any]:
    """Every entry of one section (``jobs``, ``inputs`` or ``rejected``), shard after shard."""
    for shard in iter_shards(storage, manifest):
        yield from shard.get(section, [])


def iter_jobs(storage: Storage, manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The run's job descriptions, in index order (the index the progress counters use)."""
    return iter_section(storage, manifest, "jobs")
