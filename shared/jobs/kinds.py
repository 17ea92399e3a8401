"""The one registry of job kinds: kind → job class, batch runner, report entry, Celery task name.

Everything that dispatches on a job's kind (parsing JSON, the worker's batcher, the local runner,
the run report, the producer's queueing) looks the kind up here, so a new kind is one entry.
Task names are plain strings: importing them builds no Celery app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convatlas.shared.jobs import examples_map, heatmaps, patterns
from convatlas.shared.jobs.common import Job, JobResult
from convatlas.shared.jobs.stages import Stages
from convatlas.shared.storage import Storage

Runner = Callable[[list[Any], Storage, int], list[JobResult]]
ReportEntry = Callable[[Any, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


@dataclass(frozen=True)
class JobKind:
    name: str
    job_class: type
    run: Runner  # (jobs of this kind, storage, batch size) → results in order
    report_entry: ReportEntry  # (job, its record) → (naming fields, record fields) for reports
    task: str  # Celery task name
    local_batch: int  # jobs per model call in local mode
    stages: Stages | None = None  # prepare / compute / write, for the worker's pipeline


KINDS: dict[str, JobKind] = {
    k.name: k
    for k in (
        JobKind("filter", patterns.FilterJob, patterns.run_filter_jobs, patterns.report_entry,
                "convatlas.filter_pattern", 64, patterns.STAGES),
        JobKind("gradcam", heatmaps.GradcamJob, heatmaps.run_gradcam_jobs, heatmaps.report_entry,
                "convatlas.gradcam", 16, heatmaps.STAGES),
        JobKind("examples", examples_map.ExamplesJob, examples_map.run_examples_jobs,
                examples_map.report_entry, "convatlas.examples", 32, examples_map.STAGES),
    )
}

# Tasks that are not jobs of a kind: the page reducer and the run-level callback.
REDUCE_TASK = "convatlas.reduce_grid"
FINISH_TASK = "convatlas.finish_run"
EXAMPLES_REDUCE_TASK = "convatlas.reduce_examples"  # the per-layer merge of examples maps
ATLAS_TASK = "convatlas.build_atlas"  # a model's atlas site, built in the fleet into the bucket
TASK_NAMES: dict[str, str] = {
    **{k.name: k.task for k in KINDS.values()}, "reduce": REDUCE_TASK, "finish": FINISH_TASK,
    "examples-reduce": EXAMPLES_REDUCE_TASK, "atlas": ATLAS_TASK,
}


def kind_of(job: Job) -> JobKind:
    try:
        return KINDS[job.kind]
    except KeyError:
        raise ValueError(f"unknown job kind {job.kind!r}") from None


def job_from_dict(d: dict[str, Any]) -> Any:
    """A job from its JSON form (``to_dict``); ``ValueError`` for an unknown kind."""
    if not isinstance(d, dict):
        raise ValueError(f"a job is a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return KINDS[kind].job_class.from_dict(d)  # type: ignore[attr-defined]


def run_jobs(jobs: list[Job], storage: Storage, batch_size: int | None = None) -> list[JobResult]:
    """Run jobs of any kinds, one batched call per kind; results in the order of ``jobs``."""
    out: list[JobResult | None] = [None] * len(jobs)
    by_kind: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        by_kind.setdefault(kind_of(job).name, []).append(i)
    for name, idx in by_kind.items():
        kind = KINDS[name]
        res = kind.run([jobs[i] for i in idx], storage, batch_size or max(1, len(idx)))
        if len(res) != len(idx):
            raise RuntimeError(f"{name}: {len(res)} results for {len(idx)} jobs")
        for i, r in zip(idx, res, strict=True):
            out[i] = r
    return [r for r in out if r is not None]
