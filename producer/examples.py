"""Dataset examples, producer side: the local run and the fleet submission.

Local: the map jobs run through the local runner (``producer/local.py``, by their kind), then
each layer's reduce in this process. Fleet: the map jobs are submitted like any run
(``submit_plan``: independent tasks, counted, healed); the map task that finds every map of its
run finished queues ``convatlas.reduce_examples`` for the run (a duplicate is harmless: the
reduce is idempotent). A submission with nothing to map queues that reduce itself. Photos seen
before for the same layers are not queued again (``plan_examples``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from convatlas.producer.plan import ExamplesPlan
from convatlas.shared.jobs import TASK_NAMES
from convatlas.shared.jobs.common import read_json
from convatlas.shared.jobs.examples_reduce import examples_done, reduce_run, summary_key
from convatlas.shared.storage import LocalStorage, Storage


def failed_photos(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Photos that failed alone inside their map jobs, from a run report."""
    out: list[dict[str, Any]] = []
    for j in report.get("jobs", []):
        out.extend(j.get("failed_photos") or [])
    return out


def run_examples_local(plan: ExamplesPlan, out: Path, progress: bool = True) -> dict[str, Any]:
    """The map jobs (local runner), then the reduces; the run report with an ``examples``
    section (one row per layer) and the photos that failed."""
    from convatlas.producer.local import run_local
    from convatlas.shared.report import report_key

    report = run_local(plan, out, None, progress=progress)
    storage = LocalStorage(out)
    t0 = time.perf_counter()
    report["examples"] = reduce_run(storage, plan.run_id)["layers"]
    report["timing"]["reduce_seconds"] = round(time.perf_counter() - t0, 3)
    report["failed_photos"] = failed_photos(report)
    storage.put_bytes(report_key(plan.run_id), json.dumps(report, indent=2).encode(),
                      "application/json")
    return report


def submit_examples(plan: ExamplesPlan, storage: Storage, app: Any, settings: Any = None) -> Any:
    """Submit the map jobs (``submit_plan``); with none to run, queue the reduce now."""
    from convatlas.producer.submit import stop_listening, submit_plan

    storage.delete(summary_key(plan.run_id))  # a stale summary must not end --wait early
    res = submit_plan(plan, storage, app, settings)
    if res.queued_jobs == 0:
        app.send_task(TASK_NAMES["examples-reduce"], args=(plan.run_id,))
        stop_listening(app)
    return res


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
