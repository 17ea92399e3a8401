"""Filter-pattern jobs: one (model, layer, filter) each, run in batches of one layer's filters."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from convatlas.shared import keys
from convatlas.shared.backend_select import active_backend
from convatlas.shared.engine.param.spectra import spectrum_id
from convatlas.shared.engine.patterns import Pattern, PatternParams
from convatlas.shared.images.encode import encode_png
from convatlas.shared.jobs.common import JobResult, existing_result, json_bytes, npy_bytes
from convatlas.shared.jobs.stages import Stages, run_staged
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
        out = {
            "png": keys.pattern_key(self.prefix, self.filter, "png"),
            "npy": keys.pattern_key(self.prefix, self.filter, "npy"),
        }
        if self.params.style_spec.alpha:  # maco: the transparency map, and the pattern with it
            out.update({
                "alpha_npy": keys.pattern_key(self.prefix, self.filter, "alpha.npy"),
                "alpha_png": keys.pattern_key(self.prefix, self.filter, "alpha.png"),
                "rgba_png": keys.pattern_key(self.prefix, self.filter, "rgba.png"),
            })
        return {**out, "record": self.marker}

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


def _write_pattern(job: FilterJob, prepared: None, p: Pattern, storage: Storage,
                   info: dict[str, Any]) -> JobResult:
    """Data first, the ``.json`` marker last: a marker means the PNG and .npy are complete."""
    out = job.outputs()
    record = {
        "filter": job.filter,
        "layer": job.layer,
        "model": job.model,
        "dead": p.dead,
        "fallback_used": p.fallback_used,
        "start_activation": p.start_activation,
        "final_activation": p.final_activation,
        "precision": job.params.precision,
        "backend": active_backend(),  # not in the key (backend_select.active_backend)
        "style": job.params.style,
        "steps": job.params.steps,
        "size": job.params.size,
        "robustness": p.robustness,  # quality scores (convatlas.shared.engine.quality)
        "peak_activation": p.peak_activation,
        "step_size": job.params.step_size,
        "seed": job.params.seed,
        **info,  # seconds (model, per job), batch, input_wait_seconds
    }
    storage.put_bytes(out["png"], encode_png(p.image), "image/png")
    storage.put_bytes(out["npy"], npy_bytes(p.raw), "application/octet-stream")
    if "alpha_npy" in out and p.alpha is not None:
        from convatlas.shared.engine.alpha import alpha_image, encode_rgba_png, with_alpha

        record["spectrum"] = spectrum_id(job.params.spectrum_from)
        record["alpha"] = {"sum": float(p.alpha.sum()), "max": float(p.alpha.max())}
        storage.put_bytes(out["alpha_npy"], npy_bytes(p.alpha), "application/octet-stream")
        storage.put_bytes(out["alpha_png"], encode_png(alpha_image(p.alpha)), "image/png")
        storage.put_bytes(out["rgba_png"], encode_rgba_png(with_alpha(p.image, p.alpha)), "image/png")
    storage.put_bytes(out["record"], json_bytes(record), "application/json")
    return JobResult("done", out, None, record)


def _prepare(job: FilterJob, storage: Storage) -> JobResult | None:
    """The recorded outcome, or None. A pattern needs nothing loaded, except a user's spectrum
    (maco ``--spectrum-from``): a run input, fetched once into this process (``param.spectra``)."""
    done = existing_result(job, storage)
    if done is None and job.params.spectrum_from:
        _fetch_spectrum(job.params.spectrum_from, storage)
    return done


def _fetch_spectrum(sha: str, storage: Storage) -> None:
    from convatlas.shared.engine.param import spectra

    if not spectra.spectrum_path(sha).is_file():
        got = spectra.remember(storage.get_bytes(keys.input_key(sha)))
        if got != sha:
            raise ValueError(f"spectrum input {sha} has the hash {got}")


def _compute(jobs: list[FilterJob], prepared: list[None], batch_size: int) -> list[Pattern]:
    """One batched ascent per (model, layer, params); a filter asked twice is computed once."""
    from convatlas.shared.engine.patterns import filter_patterns
    from convatlas.shared.models.registry import get_model

    groups: dict[tuple[str, str, PatternParams], list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        groups[(job.model, job.layer, job.params)].append(i)
    out: list[Pattern | None] = [None] * len(jobs)
    for (model, layer, params), idx in groups.items():
        wanted = sorted({jobs[i].filter for i in idx})
        got = {p.filter: p for p in filter_patterns(get_model(model), layer, wanted, params,
                                                    batch_size)}
        for i in idx:
            out[i] = got[jobs[i].filter]
    return [p for p in out if p is not None]


STAGES = Stages(_prepare, _compute, _write_pattern)


def run_filter_jobs(jobs: list[FilterJob], storage: Storage, batch_size: int = 64) -> list[JobResult]:
    """Run filter jobs, skipping finished ones; one batched model call per (model, layer, params)."""
    return run_staged(STAGES, jobs, storage, batch_size)


def report_entry(job: FilterJob, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields naming the job, fields from its record when done) for the run report."""
    return ({"layer": job.layer, "filter": job.filter},
            {"dead": info.get("dead", False), "fallback_used": info.get("fallback_used", False)})
