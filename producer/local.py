"""Local mode: run a plan in this process with the same job functions the workers use, then
the post-run step of its kind (``KINDS``), as a fleet run's ``finish_run`` would queue it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from convatlas.producer.plans.plan import Plan
from convatlas.producer.staging import upload_inputs, write_manifest
from convatlas.shared import keys
from convatlas.shared.jobs import KINDS, existing_result, kind_of, post_run_step, reduce_grid
from convatlas.shared.report import write_report
from convatlas.shared.storage import LocalStorage


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def run_local(plan: Plan, out: Path, batch_size: int | None = None, progress: bool = True) -> dict:
    """Run every missing job of ``plan`` into ``out``, then its kind's post-run step, if any
(its fields join the report, its time ``timing["<step>_seconds"]``); returns the run report
(with timings)."""
    storage = LocalStorage(out)
    t0 = time.perf_counter()
    upload_inputs(plan, storage)
    write_manifest(plan, storage)
    todo = [j for j in plan.jobs if existing_result(j, storage) is None]
    load_seconds: dict[str, float] = {}
    with tqdm(total=len(plan.jobs), initial=len(plan.jobs) - len(todo), unit="job",
              desc=plan.kind, disable=not progress) as bar:
        for name, kind in KINDS.items():
            mine = [j for j in todo if kind_of(j).name == name]
            size = batch_size or kind.local_batch
            for chunk in _chunks(mine, size):
                kind.run(chunk, storage, size)
                bar.update(len(chunk))
    for grid in plan.grids:
        reduce_grid(grid, storage)
    from convatlas.shared.models.registry import loaded_models

    for lm in loaded_models():
        load_seconds[lm.name] = round(lm.load_seconds, 3)
    run_dir = out / keys.run_prefix(plan.run_id)
    report = write_report(storage, plan.run_id, lambda k: _relative(run_dir, out / k))
    report["timing"] = {"seconds": round(time.perf_counter() - t0, 3),
                        "model_load_seconds": load_seconds, "jobs_run": len(todo)}
    step = post_run_step(plan.kind)
    if step is not None:  # even with no job run: a re-run still reduces
        t1 = time.perf_counter()
        report.update(step.report_fields(step.run(storage, plan.run_id)))
        report["timing"][f"{step.name}_seconds"] = round(time.perf_counter() - t1, 3)
    import json

    storage.put_bytes(f"{keys.run_prefix(plan.run_id)}/report.json",
                      json.dumps(report, indent=2).encode(), "application/json")
    return report


def _relative(start: Path, target: Path) -> str:
    import os

    return os.path.relpath(target, start)
