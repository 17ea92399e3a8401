"""The examples planner: map jobs (batches of photos not seen before for these layers) and one
reduce per layer, listed in the manifest for the workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convatlas.producer.plans.inputs import hash_inputs
from convatlas.producer.plans.plan import Plan, PlanError
from convatlas.producer.plans.validate import (
    checked_precision,
    model_weights_id,
    parse_layers,
    resolve_model,
)
from convatlas.shared import keys
from convatlas.shared.config import Settings
from convatlas.shared.jobs import Job
from convatlas.shared.jobs.common import read_json
from convatlas.shared.jobs.examples_map import ExamplesJob
from convatlas.shared.jobs.examples_reduce import ExamplesReduceJob
from convatlas.shared.manifest import SHARD_SIZE
from convatlas.shared.storage import Storage

__all__ = ["ExamplesPlan", "plan_examples"]


@dataclass
class ExamplesPlan(Plan):
    """A plan of map jobs plus the per-layer reduces (listed in the manifest for the workers)."""

    reduces: list[ExamplesReduceJob] = field(default_factory=list)

    def manifest(self) -> dict:
        return {**super().manifest(), "examples_reduces": [r.to_dict() for r in self.reduces]}

    def header(self, size: int = SHARD_SIZE) -> dict[str, Any]:
        return {**super().header(size), "examples_reduces": [r.to_dict() for r in self.reduces]}


def plan_examples(
    paths: list[str], model: str, layers: str, top: int, settings: Settings,
    storage: Storage | None = None, precision: str = "float32", batch: int = 32,
    side: int | None = None,
) -> ExamplesPlan:
    """Map jobs (batches of ``batch`` photos) for the photos not seen before for these layers
    (per ``storage``'s photo markers), and one reduce per layer; all checked before queueing."""
    spec = resolve_model(model)
    checked_precision(precision)
    if not 1 <= top <= 100:
        raise PlanError(f"--top must be 1..100, got {top}")
    if not 1 <= batch <= 1024:
        raise PlanError(f"--batch must be 1..1024, got {batch}")
    side = side or spec.input_size or 224
    if spec.input_size and side != spec.input_size:
        raise PlanError(f"{model} takes {spec.input_size}×{spec.input_size} inputs: --side {spec.input_size}")
    if not 16 <= side <= 1024:
        raise PlanError(f"--side must be 16..1024, got {side}")
    chosen = parse_layers(model, layers)
    order = [name for name, _ in chosen]
    wid = model_weights_id(model, settings)
    inputs, rejected = hash_inputs(paths)
    names: dict[str, str] = {}
    for f in inputs:
        names.setdefault(f.sha256, f.name)
    if not inputs and not rejected:
        raise PlanError("no images found")
    prefix = keys.examples_prefix(model, wid, side, top, precision)
    covered: dict[str, set[str]] = {}
    if storage is not None:
        sets: dict[str, set[str]] = {}
        for key in storage.list_keys(f"{prefix}/photos/"):
            lsid, _, fname = key[len(prefix) + len("/photos/"):].partition("/")
            if lsid not in sets:
                layerset = read_json(storage, f"{prefix}/layersets/{lsid}.json") or {}
                sets[lsid] = set(layerset.get("layers", []))
            covered.setdefault(fname.removesuffix(".json"), set()).update(sets[lsid])
    by_missing: dict[tuple[str, ...], list[str]] = {}
    for sha in sorted(names):
        missing = tuple(n for n in order if n not in covered.get(sha, set()))
        if missing:
            by_missing.setdefault(missing, []).append(sha)
    jobs: list[Job] = []
    for missing, shas in sorted(by_missing.items()):
        for i in range(0, len(shas), batch):
            chunk = tuple(shas[i : i + batch])
            jobs.append(ExamplesJob(model, wid, missing, chunk, tuple(names[s] for s in chunk),
                                    top, side, precision))
    reduces = [ExamplesReduceJob(model, wid, name, channels, top, side, precision)
               for name, channels in chosen]
    plan = ExamplesPlan("examples", model, jobs, [], inputs, rejected, reduces=reduces)
    plan.run_id = "e-" + keys.short_hash(
        {"prefix": prefix, "layers": order, "photos": sorted(names),
         "jobs": [j.marker for j in jobs]}, 12)
    return plan
