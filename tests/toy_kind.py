"""A toy job kind, defined in this one module and registered by its one ``register`` call: a
job squares a number, and a run's post-run step sums its squares. Nothing else in the project
names it; the local runner runs it, and a fleet worker does once it imports this module
(``CONVATLAS_KIND_MODULES=tests.toy_kind``). A negative number is a bad input: it fails alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convatlas.shared import keys
from convatlas.shared.jobs import (
    JobKind,
    JobResult,
    RunStep,
    existing_result,
    read_json,
    record_failure,
    register,
)
from convatlas.shared.jobs.common import json_bytes
from convatlas.shared.manifest import iter_jobs, load_manifest
from convatlas.shared.storage import Storage


@dataclass(frozen=True)
class ToyJob:
    tag: str  # a folder of its own per test
    n: int

    kind = "toy"

    @property
    def folder(self) -> str:
        return f"toy/{keys.safe_name(self.tag)}/"

    @property
    def marker(self) -> str:
        return f"{self.folder}{self.n:+05d}.json"

    @property
    def error_key(self) -> str:
        return f"{self.folder}{self.n:+05d}.error.json"

    def outputs(self) -> dict[str, str]:
        return {"record": self.marker}

    def outcome_folders(self) -> tuple[str, str]:
        return self.folder, self.folder

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tag": self.tag, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToyJob:
        return cls(str(d["tag"]), int(d["n"]))


def run_toy_jobs(jobs: list[ToyJob], storage: Storage, batch_size: int) -> list[JobResult]:
    out = []
    for job in jobs:
        res = existing_result(job, storage)
        if res is None and job.n < 0:
            res = record_failure(job, storage, f"negative number {job.n}")
        if res is None:
            record = {"n": job.n, "square": job.n * job.n, "batch": len(jobs)}
            storage.put_bytes(job.marker, json_bytes(record), "application/json")
            res = JobResult("done", job.outputs(), None, record)
        out.append(res)
    return out


def report_entry(job: ToyJob, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"name": f"toy {job.n}"}, {"square": info.get("square")}


def sum_key(run_id: str) -> str:
    return f"{keys.run_prefix(run_id)}/toy-sum.json"


def sum_squares(storage: Storage, run_id: str) -> dict[str, Any]:
    """The post-run step: the sum of the run's squares (its failed jobs count nothing)."""
    jobs = [ToyJob.from_dict(d) for d in iter_jobs(storage, load_manifest(storage, run_id))]
    records = [read_json(storage, j.marker) for j in jobs]
    summary = {"run_id": run_id, "total": sum(r["square"] for r in records if r),
               "summed": sum(r is not None for r in records)}
    storage.put_bytes(sum_key(run_id), json_bytes(summary), "application/json")
    return summary


TOY = register(JobKind(
    "toy", ToyJob, run_toy_jobs, report_entry, "convatlas.test_toy", local_batch=4,
    post_run=RunStep("sum", "convatlas.test_toy_sum", sum_squares,
                     report_fields=lambda s: {"toy_total": s["total"]},
                     task_result=lambda s: {"total": s["total"]}),
))
