"""Clock skew (issue 26, item 7): one worker's wall clock jumps 20 minutes ahead mid-run.

S3 refuses that worker's request signatures (SeaweedFS, like AWS, allows 15 minutes). The
promise: its jobs are neither failed nor lost. They are retried at once, with the reason in
its log (``ClockSkewed``), for a worker whose clock is right. The skewed worker stops taking
tasks (``workers.clock_guard``) and takes them again once its clock is back. The healer reads
Redis's clock (``shared.progress``), so it queues nothing again early. Every job ends with one
counted outcome.

The skew comes from ``tests/faults/skewed_clock`` (its docstring says why not libfaketime).
"""

from __future__ import annotations

import os
from pathlib import Path

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import submit_plan
from convatlas.shared.engine.patterns import PatternParams
from convatlas.stack.harness import start_worker, stop_worker, wait_ready
from convatlas.workers.clock_guard import CHECK_EVERY_S
from tests.faults.conftest import check_report, wait_until

JOBS = 32
SKEW_S = 20 * 60
SKEWED_CLOCK = Path(__file__).with_name("skewed_clock")


def test_a_worker_twenty_minutes_ahead_loses_nothing(make_rig, tmp_path: Path) -> None:  # noqa: ANN001
    # a skewed healer would see every run stalled for 20 min and requeue at once; a healthy
    # run here has its outcomes well within this (the other worker's start included)
    rig = make_rig(worker=False, concurrency=8, requeue_after=120)
    skew_file = tmp_path / "skew"
    skew_file.write_text("0")
    env = {**rig.env, "CONVATLAS_TEST_CLOCK_SKEW_FILE": str(skew_file),
           "PYTHONPATH": os.pathsep.join(
               p for p in (str(SKEWED_CLOCK), rig.env.get("PYTHONPATH", "")) if p)}
    log_path = rig.dir / "worker-skewed.log"
    skewed = start_worker(env, log_path, concurrency=8)
    try:
        wait_ready(skewed, log_path)
        plan = plan_grids("vgg16-hed", "block1_conv1", f"0:{JOBS}", PatternParams(64, 10),
                          rig.settings)
        submit_plan(plan, rig.storage, rig.app)
        wait_until(lambda: "] received" in log_path.read_text(errors="replace"),
                   rig.batch_bound(), "the skewed worker to take tasks")
        skew_file.write_text(str(SKEW_S))  # the injection: its clock jumps (its first batch
        # is still loading the model)
        # its next S3 request is refused: the task is retried at once and the guard is
        # alarmed; or the guard's own round sees the skew
        wait_until(lambda: "takes no tasks until its clock is set" in log_path.read_text(
            errors="replace"), rig.batch_bound() + CHECK_EVERY_S, "the clock guard")
        rig.start_worker()  # a worker with a right clock
        report = rig.follow(plan, rig.batch_bound()).report("with a skewed worker")
        check_report(rig.storage, plan, report)
        assert report["counts"] == {"done": JOBS, "failed": 0, "pending": 0, "total": JOBS,
                                    "rejected": 0}
        assert (report.get("healing") or {}).get("requeued", 0) == 0  # nothing queued early
        log = log_path.read_text(errors="replace")
        assert "ClockSkewed" in log and "off the S3 server's" in log, log[-3000:]  # the reason
        assert skewed.poll() is None  # it waits for its clock, it does not crash
        skew_file.write_text("0")  # its clock is set again
        wait_until(lambda: "taking tasks again" in log_path.read_text(errors="replace"),
                   CHECK_EVERY_S + 5, "the skewed worker to take tasks again")
        print(f"a worker {SKEW_S // 60} min ahead: {JOBS} jobs done, 0 lost, 0 queued again")
    finally:
        stop_worker(skewed)
