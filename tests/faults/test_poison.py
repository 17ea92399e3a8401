"""Poison jobs: a job that always fails ends after bounded attempts as a recorded failure (when
it can be parsed at all), never blocks the queue behind it and never takes the worker down."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from convatlas.producer.plans.heatmaps import plan_heatmaps
from convatlas.producer.submit import submit_plan
from convatlas.shared.jobs import existing_result
from convatlas.workers.tasks import POISON_RETRIES, RETRY_BASE_S
from tests.faults.conftest import check_report, received
from tests.faults.test_bad_input import _png
from tests.unit.test_images import photo

GOOD = 6


def test_poison_jobs_fail_alone(make_rig, tmp_path: Path) -> None:  # noqa: ANN001
    rig = make_rig(concurrency=8)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(GOOD):
        (folder / f"p{i}.png").write_bytes(_png(photo(48, 64, i)))
    (folder / "always-bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    plan = plan_heatmaps([str(folder)], "efficientnet-lite0", None, None, rig.settings)
    template = next(j for j in plan.jobs if j.name == "p0.png")
    ghost_sha = hashlib.sha256(b"never uploaded").hexdigest()
    ghost = dataclasses.replace(template, image_sha=ghost_sha, name="ghost")
    poison = {
        # raises inside the model call (bypasses the planner's class check)
        "class-out-of-range": {**template.to_dict(), "class_index": 5000},
        "unknown-kind": {"kind": "bogus", "x": 1},
        "not-a-dict": "rm -rf /",
        "missing-fields": {"kind": "gradcam"},
        "input-not-in-storage": ghost.to_dict(),
    }
    # queued first, ahead of the run: the run must not wait behind them
    sent = {name: rig.app.send_task("convatlas.gradcam", args=[arg])
            for name, arg in poison.items()}
    submit_plan(plan, rig.storage, rig.app)
    # a poison job's retries run beside the run's batches, never blocking them
    report = rig.follow(plan, rig.batch_bound()).report("behind poison jobs")
    check_report(rig.storage, plan, report, failed={"always-bad.jpg"})
    assert report["counts"]["done"] == GOOD and report["counts"]["failed"] == 1

    # each poison message: 1 + POISON_RETRIES attempts of one batch each, with the backoffs
    # between them (2, 4 … s, +25 % jitter)
    attempts = 1 + POISON_RETRIES
    bound = attempts * rig.batch_bound() + 1.25 * RETRY_BASE_S * (2 ** POISON_RETRIES - 1)
    outcomes = {name: r.get(timeout=bound) for name, r in sent.items()}
    for name in ("unknown-kind", "not-a-dict", "missing-fields"):
        # not even a job: reported as an error (Celery SUCCESS), not retried, nothing to record
        assert outcomes[name]["status"] == "error" and outcomes[name]["error"], (name, outcomes)
    # a job that keeps raising: retried POISON_RETRIES times, then recorded as failed for good
    assert outcomes["class-out-of-range"]["status"] == "failed"
    assert "5000" in outcomes["class-out-of-range"]["error"]
    bad = existing_result(dataclasses.replace(template, class_index=5000), rig.storage)
    assert bad is not None and bad.status == "failed" and "retries" in bad.error
    # the input's fault: recorded for good as error.json
    assert outcomes["input-not-in-storage"]["status"] == "failed"
    rec = existing_result(ghost, rig.storage)
    assert rec is not None and rec.status == "failed" and "not found" in rec.error
    assert json.loads(rig.storage.get_bytes(ghost.error_key))["error"] == rec.error

    log = rig.logs()
    for name, r in sent.items():  # bounded deliveries: no redelivery loop
        times = 1 + POISON_RETRIES if name == "class-out-of-range" else 1
        assert sum(f"[{r.id}] received" in line for line in log.splitlines()) == times, name
    assert received(log, "convatlas.gradcam") == len(poison) + GOOD + 1 + POISON_RETRIES
    assert rig.ping_worker() and rig.worker.poll() is None
