"""Filter-pattern jobs: one (model, layer, filter) each, run in batches of one layer's filters."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any

from convatlas.shared import keys
from convatlas.shared.engine.patterns import Pattern, PatternParams
from convatlas.shared.images import encode_png
from convatlas.shared.jobs.common import JobResult, existing_result, io_map, json_bytes, npy_bytes
from convatlas.shared.storage import Storage


def params_to_dict(params: PatternParams) -> dict[str, Any]:
    """The parameters as the flat JSON fields of a job."""
    return asdict(params)


def params_from_dict(d: dict[str, Any]) -> tuple[PatternParams, dict[str, Any]]:
    """(the ``PatternParams`` held in a job's flat JSON, the remaining fields)."""
    names = {f.name for f in fields(PatternParams)}
    return (PatternParams(**{k: v for k, v in d.items() if k in names}),
            {k: v for k, v in d.items() if k not in names})


@dataclass(frozen=True)
class FilterJob:
    model: str
    weights_id: str
    layer: str
    filter: int
    params: PatternParams = field(default_factory=PatternParams)

    kind = "filter"

    @property
    def prefix(self) -> str:
        return keys.pattern_prefix(self.model, self.weights_id, self.layer, self.params.slug())

    @property
    def marker(self) -> str:
        return keys.pattern_key(self.prefix, self.filter, "json")

    @property
    def error_key(self) -> str:
        return keys.pattern_key(self.prefix, self.filter, "error.json")

    def outputs(self) -> dict[str, str]:
        return {
            "png": keys.pattern_key(self.prefix, self.filter, "png"),
            "npy": keys.pattern_key(self.prefix, self.filter, "npy"),
            "record": self.marker,
        }

    def outcome_folders(self) -> tuple[str, str]:
        """(folder of its markers, the wider folder its siblings share): the layer's folder."""
        folder = self.prefix + "/"
        return folder, folder

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "weights_id": self.weights_id,
                "layer": self.layer, "filter": self.filter, **params_to_dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FilterJob:
        params, rest = params_from_dict({k: v for k, v in d.items() if k != "kind"})
        return cls(params=params, **rest)


def _write_pattern(
    storage: Storage, pair: tuple[FilterJob, Pattern], *, seconds: float, batch: int
) -> JobResult:
    """Data first, the ``.json`` marker last: a marker means the PNG and .npy are complete."""
    job, p = pair
    out = job.outputs()
    info = {
        "filter": job.filter,
        "layer": job.layer,
        "model": job.model,
        "dead": p.dead,
        "fallback_used": p.fallback_used,
        "start_activation": p.start_activation,
        "final_activation": p.final_activation,
        "precision": job.params.precision,
        "style": job.params.style,
        "steps": job.params.steps,
        "seconds": seconds,
        "batch": batch,
    }
    storage.put_bytes(out["png"], encode_png(p.image), "image/png")
    storage.put_bytes(out["npy"], npy_bytes(p.raw), "application/octet-stream")
    storage.put_bytes(out["record"], json_bytes(info), "application/json")
    return JobResult("done", out, None, info)


def run_filter_jobs(jobs: list[FilterJob], storage: Storage, batch_size: int = 64) -> list[JobResult]:
    """Run filter jobs, skipping finished ones; one batched model call per (model, layer, params)."""
    from convatlas.shared.engine.patterns import filter_patterns
    from convatlas.shared.models.registry import get_model

    results: list[JobResult | None] = io_map(lambda j: existing_result(j, storage), jobs)
    groups: dict[tuple[str, str, PatternParams], list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        if results[i] is None:
            groups[(job.model, job.layer, job.params)].append(i)
    for (model, layer, params), idx in groups.items():
        lm = get_model(model)
        t0 = time.perf_counter()
        wanted = sorted({jobs[i].filter for i in idx})
        patterns = {p.filter: p for p in filter_patterns(lm, layer, wanted, params, batch_size)}
        seconds = (time.perf_counter() - t0) / max(1, len(wanted))

        write = partial(_write_pattern, storage, seconds=seconds, batch=len(wanted))
        pairs = [(jobs[i], patterns[jobs[i].filter]) for i in idx]
        for i, res in zip(idx, io_map(write, pairs), strict=True):
            results[i] = res
    return [r for r in results if r is not None]


def report_entry(job: FilterJob, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields naming the job, fields from its record when done) for the run report."""
    return ({"layer": job.layer, "filter": job.filter},
            {"dead": info.get("dead", False), "fallback_used": info.get("fallback_used", False)})
