"""A plan: the jobs of one run, the inputs they read and the files refused, in manifest shards.

``Plan`` holds everything in memory; ``spool.SpooledPlan`` has the same interface for plans too
big to hold. The run id is a hash of the jobs' markers (``RunHash``), so the same request gives
the same run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convatlas.shared import keys
from convatlas.shared.jobs import GridJob, Job
from convatlas.shared.manifest import SHARD_SIZE

__all__ = ["InputFile", "Plan", "PlanError", "RunHash", "Shard", "chunks", "run_id_of"]


class PlanError(ValueError):
    """The request is invalid; the message says why and what is valid."""


@dataclass
class InputFile:
    path: Path
    name: str  # as shown to the user (relative to the folder given)
    sha256: str
    size: int


@dataclass
class Shard:
    """One piece of a plan, as written to ``runs/<id>/manifest/shard-NNNNN.json``."""

    offset: int  # the run-wide index of its first job
    jobs: list[Job] = field(default_factory=list)
    inputs: list[InputFile] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "jobs": [j.to_dict() for j in self.jobs],
                "inputs": [_input_dict(f) for f in self.inputs],
                "rejected": [{"name": n, "error": r} for n, r in self.rejected]}


def _input_dict(f: InputFile) -> dict[str, Any]:
    return {"name": f.name, "sha256": f.sha256, "bytes": f.size}


def chunks(n: int, size: int) -> int:
    """How many pieces of ``size`` hold ``n`` items."""
    return -(-n // size)


@dataclass
class Plan:
    kind: str  # "grids" | "heatmaps"
    model: str
    jobs: list[Job]
    grids: list[GridJob] = field(default_factory=list)
    inputs: list[InputFile] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    run_id: str = ""

    @property
    def total(self) -> int:
        return len(self.jobs)

    def _input_shards(self, size: int) -> int:
        return max(chunks(len(self.inputs), size), chunks(len(self.rejected), size))

    def shard_count(self, size: int = SHARD_SIZE) -> int:
        return max(1, self._input_shards(size) + chunks(len(self.jobs), size))

    def shards(self, size: int = SHARD_SIZE) -> Iterator[Shard]:
        """The plan in ``shard_count(size)`` pieces: first the inputs (and refused files), then
        the jobs. A submission uploads a shard's inputs before it queues that shard's jobs, and
        a job may read any input (an examples job reads a batch of 32 photos from anywhere in
        the folder), so no job may come before the last input."""
        k = self._input_shards(size)
        for n in range(k):
            a, b = n * size, (n + 1) * size
            yield Shard(0, [], self.inputs[a:b], self.rejected[a:b])
        for n in range(self.shard_count(size) - k):
            a, b = n * size, (n + 1) * size
            yield Shard(a, self.jobs[a:b])

    def iter_rejected(self) -> Iterator[tuple[str, str]]:
        return iter(self.rejected)

    def header(self, size: int = SHARD_SIZE) -> dict[str, Any]:
        """The manifest's header (``convatlas.shared.manifest``): everything but the shards."""
        return {"run_id": self.run_id, "kind": self.kind, "model": self.model,
                "grids": [g.to_dict() for g in self.grids], "jobs_total": self.total,
                "rejected_total": len(self.rejected), "shards": self.shard_count(size),
                "shard_size": size}

    def manifest(self) -> dict:
        """The whole manifest as one inline document (small plans, tests)."""
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "model": self.model,
            "jobs": [j.to_dict() for j in self.jobs],
            "grids": [g.to_dict() for g in self.grids],
            "inputs": [_input_dict(f) for f in self.inputs],
            "rejected": [{"name": n, "error": r} for n, r in self.rejected],
        }


class RunHash:
    """A run id from its job markers, independent of their order and built one marker at a
    time: the sum modulo 2^256 of each marker's sha256 (markers are distinct within a run)."""

    def __init__(self, kind: str) -> None:
        self.kind, self.total = kind, 0

    def add(self, marker: str) -> None:
        self.total = (self.total + int.from_bytes(hashlib.sha256(marker.encode()).digest(), "big")) % (1 << 256)

    def run_id(self) -> str:
        return f"{self.kind[0]}-{keys.short_hash(f'{self.kind}:{self.total:064x}'.encode(), 12)}"


def run_id_of(kind: str, jobs: list[Job]) -> str:
    """The run id of ``jobs`` (``RunHash`` over their markers)."""
    h = RunHash(kind)
    for j in jobs:
        h.add(j.marker)
    return h.run_id()
