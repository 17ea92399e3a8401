"""The one registry of job kinds: kind → job class, batch runner, report entry, Celery task
name, and the optional step that follows a run of the kind (the examples reduce).

Everything that dispatches on a job's kind (parsing JSON, the worker's batcher and its tasks, the
local runner, the run report, the producer's queueing, the end of a run) looks the kind up here,
so a new kind is one entry: one ``JobKind`` in ``KINDS``, or ``register(JobKind(...))`` from a
module of its own (a worker imports such modules at start: ``CONVATLAS_KIND_MODULES``).
Task names are plain strings: importing them builds no Celery app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convatlas.shared.jobs import examples_map, examples_reduce, heatmaps, patterns, report_card
from convatlas.shared.jobs.common import Job, JobResult
from convatlas.shared.jobs.stages import Stages
from convatlas.shared.storage import Storage

Runner = Callable[[list[Any], Storage, int], list[JobResult]]
ReportEntry = Callable[[Any, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]
Fields = Callable[[dict[str, Any]], dict[str, Any]]


def _no_fields(summary: dict[str, Any]) -> dict[str, Any]:
    return {}


def _no_outputs(storage: Storage, run_id: str) -> list[str]:
    return []


@dataclass(frozen=True)
class RunStep:
    """What a run of a kind does once every job has an outcome (the examples reduce merges the
    maps' candidates per layer). A local run calls ``run`` after its jobs; on the fleet the
    run's ``finish_run`` queues ``task``, which calls it in a worker. Either way it runs even
    when the run had no job to do (a re-run over photos already mapped still reduces)."""

    name: str  # "reduce": its TASK_NAMES key is "<kind>-<name>", its local timing "<name>_seconds"
    task: str  # Celery task name
    run: Callable[[Storage, str], dict[str, Any]]  # (storage, run id) → its summary
    report_fields: Fields = _no_fields  # summary → fields added to a local run's report
    task_result: Fields = _no_fields  # summary → fields of the fleet task's result
    outputs: Callable[[Storage, str], list[str]] = _no_outputs  # (storage, run id) → keys `fetch` copies


@dataclass(frozen=True)
class JobKind:
    name: str  # also the name of a run of this kind alone (``examples``), which finds its post_run
    job_class: type
    run: Runner  # (jobs of this kind, storage, batch size) → results in order
    report_entry: ReportEntry  # (job, its record) → (naming fields, record fields) for reports
    task: str  # Celery task name
    local_batch: int  # jobs per model call in local mode
    stages: Stages | None = None  # prepare / compute / write, for the worker's pipeline
    post_run: RunStep | None = None  # run-level step once every job of the run has an outcome


EXAMPLES_REDUCE = RunStep(
    "reduce", "convatlas.reduce_examples", examples_reduce.reduce_run,
    report_fields=lambda summary: {"examples": summary["layers"]},
    task_result=lambda summary: {"layers": {r["layer"]: r["status"] for r in summary["layers"]}},
)


KINDS: dict[str, JobKind] = {
    k.name: k
    for k in (
        JobKind("filter", patterns.FilterJob, patterns.run_filter_jobs, patterns.report_entry,
                "convatlas.filter_pattern", 64, patterns.STAGES),
        JobKind("gradcam", heatmaps.GradcamJob, heatmaps.run_gradcam_jobs, heatmaps.report_entry,
                "convatlas.gradcam", 16, heatmaps.STAGES),
        JobKind("examples", examples_map.ExamplesJob, examples_map.run_examples_jobs,
                examples_map.report_entry, "convatlas.examples", 32, examples_map.STAGES,
                EXAMPLES_REDUCE),
        JobKind("report-card", report_card.ReportCardJob, report_card.run_report_card_jobs,
                report_card.report_entry, "convatlas.report_card", 16,
                post_run=RunStep("card", "convatlas.report_card_finish", report_card.finish_card,
                                 report_fields=lambda s: {"report_card": s},
                                 task_result=lambda s: {"card": s["status"]},
                                 outputs=report_card.card_outputs)),
    )
}

# Tasks that are not jobs of a kind: the page reducer, the run-level callback, the atlas.
REDUCE_TASK = "convatlas.reduce_grid"
FINISH_TASK = "convatlas.finish_run"
ATLAS_TASK = "convatlas.build_atlas"  # a model's atlas site, built in the fleet into the bucket


def _task_names(kind: JobKind) -> dict[str, str]:
    """A kind's tasks by key: its jobs' (``<kind>``) and its post-run step's (``<kind>-<step>``)."""
    step = {f"{kind.name}-{kind.post_run.name}": kind.post_run.task} if kind.post_run else {}
    return {kind.name: kind.task, **step}


TASK_NAMES: dict[str, str] = {
    **{key: task for k in KINDS.values() for key, task in _task_names(k).items()},
    "reduce": REDUCE_TASK, "finish": FINISH_TASK, "atlas": ATLAS_TASK,
}


def register(kind: JobKind) -> JobKind:
    """Add a kind defined outside this module (a plugin's, a test's) to ``KINDS`` and its tasks
    to ``TASK_NAMES``; registering the same entry again is harmless, another of that name is not."""
    if KINDS.get(kind.name, kind) != kind:
        raise ValueError(f"job kind {kind.name!r} is already registered")
    taken = {t for k in KINDS.values() if k.name != kind.name for t in _task_names(k).values()}
    if set(_task_names(kind).values()) & (taken | {REDUCE_TASK, FINISH_TASK, ATLAS_TASK}):
        raise ValueError(f"job kind {kind.name!r}: a task name is already taken")
    KINDS[kind.name] = kind
    TASK_NAMES.update(_task_names(kind))
    return kind


def post_run_step(run_kind: str) -> RunStep | None:
    """The step that follows a run named ``run_kind``, or None. A run of one job kind bears its
    name (``examples``); grids and heatmaps runs bear none (their jobs: ``filter``, ``gradcam``)
    and have no such step."""
    kind = KINDS.get(run_kind)
    return kind.post_run if kind is not None else None


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
