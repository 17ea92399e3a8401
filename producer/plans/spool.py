"""A plan too big to hold in memory, for fleet submissions: kept in a local spool file."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from convatlas.producer.plans.heatmaps import heatmap_items
from convatlas.producer.plans.plan import InputFile, PlanError, RunHash, Shard, chunks
from convatlas.shared.config import Settings
from convatlas.shared.jobs import GridJob, Job, job_from_dict
from convatlas.shared.manifest import SHARD_SIZE

__all__ = ["SpooledPlan", "spool_heatmaps"]


class SpooledPlan:
    """A plan too big to hold: its jobs, inputs and refused files wait in a local spool file
    (one JSON line each) and are read back shard by shard. Same interface as ``Plan`` for
    ``submit_plan``: ``run_id``, ``kind``, ``model``, ``grids``, ``total``, ``header()``,
    ``shard_count()``, ``shards()``, ``iter_rejected()``."""

    grids: list[GridJob] = []

    def __init__(self, kind: str, model: str) -> None:
        self.kind, self.model, self.run_id = kind, model, ""
        self.total = self.inputs_total = self.rejected_total = self.entries = 0
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="convatlas-plan-")
        self._hash = RunHash(kind)

    def add(self, item: InputFile | tuple[str, str] | Job) -> None:
        if isinstance(item, InputFile):
            line: dict[str, Any] = {"f": [str(item.path), item.name, item.sha256, item.size]}
            self.inputs_total += 1
        elif isinstance(item, tuple):
            line = {"r": list(item)}
            self.rejected_total += 1
        else:
            line = {"j": item.to_dict()}
            self._hash.add(item.marker)
            self.total += 1
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.entries += 1

    def seal(self) -> SpooledPlan:
        self._file.flush()
        self.run_id = self._hash.run_id()
        return self

    def close(self) -> None:
        self._file.close()

    def shard_count(self, size: int = SHARD_SIZE) -> int:
        return max(1, chunks(self.entries, size))

    def shards(self, size: int = SHARD_SIZE) -> Iterator[Shard]:
        """``shard_count(size)`` shards of ``size`` spool entries each, in walk order."""
        self._file.seek(0)
        shard, taken, offset = Shard(0), 0, 0
        for raw in self._file:
            line = json.loads(raw)
            if "j" in line:
                shard.jobs.append(job_from_dict(line["j"]))
                offset += 1
            elif "f" in line:
                path, name, sha, size_ = line["f"]
                shard.inputs.append(InputFile(Path(path), name, sha, size_))
            else:
                shard.rejected.append((line["r"][0], line["r"][1]))
            taken += 1
            if taken == size:
                yield shard
                shard, taken = Shard(offset), 0
        if taken or offset == 0 and not self.entries:
            yield shard

    def iter_rejected(self) -> Iterator[tuple[str, str]]:
        self._file.seek(0)
        for raw in self._file:
            if raw.startswith('{"r"'):
                name, reason = json.loads(raw)["r"]
                yield name, reason

    def header(self, size: int = SHARD_SIZE) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": self.kind, "model": self.model, "grids": [],
                "jobs_total": self.total, "rejected_total": self.rejected_total,
                "shards": self.shard_count(size), "shard_size": size}


def spool_heatmaps(
    paths: list[str], model: str, cls: str | None, layer: str | None, settings: Settings,
    precision: str = "float32", cam: dict[str, Any] | None = None,
) -> SpooledPlan:
    """``plan_heatmaps`` for a folder of any size: the same jobs and run id, kept in a spool
    file instead of memory (the producer's memory does not grow with the folder)."""
    items = heatmap_items(paths, model, cls, layer, settings, precision, cam)
    plan = SpooledPlan("heatmaps", model)
    try:
        for item in items:
            plan.add(item)
    except BaseException:
        plan.close()
        raise
    if not plan.inputs_total and not plan.rejected_total:
        plan.close()
        raise PlanError("no images found")
    return plan.seal()
