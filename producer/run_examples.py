"""Dataset examples, producer side: the local run and the fleet submission.

Local: the map jobs, then each layer's reduce (the kind's post-run step), run by the local
runner (``producer/local.py``). Fleet: the map jobs are submitted like any run (``submit_plan``:
independent tasks, counted, healed); the run's ``finish_run`` queues ``convatlas.reduce_examples``
(a duplicate is harmless: the reduce is idempotent), and a submission with nothing to map queues
it at once. Photos seen before for the same layers are not queued again (``plan_examples``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from convatlas.producer.plans.examples import ExamplesPlan
from convatlas.shared.jobs.common import read_json
from convatlas.shared.jobs.examples_reduce import examples_done, summary_key
from convatlas.shared.storage import LocalStorage, Storage


def failed_photos(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Photos that failed alone inside their map jobs, from a run report."""
    out: list[dict[str, Any]] = []
    for j in report.get("jobs", []):
        out.extend(j.get("failed_photos") or [])
    return out


def run_examples_local(plan: ExamplesPlan, out: Path, progress: bool = True) -> dict[str, Any]:
    """The map jobs, then the reduces (the local runner); the run report with an ``examples``
    section (one row per layer) and the photos that failed."""
    from convatlas.producer.local import run_local
    from convatlas.shared.report import report_key

    report = run_local(plan, out, None, progress=progress)
    storage = LocalStorage(out)
    report["failed_photos"] = failed_photos(report)
    storage.put_bytes(report_key(plan.run_id), json.dumps(report, indent=2).encode(),
                      "application/json")
    return report


def submit_examples(plan: ExamplesPlan, storage: Storage, app: Any, settings: Any = None) -> Any:
    """Submit the map jobs (``submit_plan``, which queues the reduce now if none is to run)."""
    from convatlas.producer.submit import submit_plan

    storage.delete(summary_key(plan.run_id))  # a stale summary must not end --wait early
    return submit_plan(plan, storage, app, settings)


def wait_for_examples(storage: Storage, run_id: str, timeout: float, poll: float = 1.0) -> dict[str, Any]:
    """Block until the run's reduces have merged every batch of its maps; their summary."""
    from convatlas.shared.report import load_manifest

    manifest = load_manifest(storage, run_id)
    deadline = time.monotonic() + timeout
    while True:
        summary = read_json(storage, summary_key(run_id))
        if summary is not None and examples_done(storage, manifest):
            return summary
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id}: layers not merged after {timeout:.0f} s")
        time.sleep(poll)
