"""A worker SIGKILLed mid-run, three times: late acks + the visibility timeout bring its
unacked tasks back and the run completes with no job lost or listed twice."""

from __future__ import annotations

import time

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import submit_plan
from convatlas.shared.engine.patterns import PatternParams
from convatlas.workers.memory_guard import LOST_ATTEMPTS_ENV
from tests.faults.conftest import TASK_TIME_LIMIT_S, check_report, received, wait_until

KILLS = 3
JOBS = 64


def test_worker_sigkilled_three_times_loses_nothing(make_rig) -> None:  # noqa: ANN001
    """Each kill lands while the worker holds unacked tasks it has not finished."""
    # A small visibility timeout, so the killed workers' tasks come back within seconds. It is
    # shorter than a restarted worker's first batch (the model load) on a busy machine, so a
    # task still waiting for that batch may be delivered again: a harmless duplicate, which
    # the time limit (above that batch) lets finish instead of timing out.
    # the same tasks can be held by each killed worker (RabbitMQ hands them straight back): a
    # job whose worker died LOST_ATTEMPTS times would be failed as a memory hog
    # (workers.memory_guard); these kills are not about memory
    rig = make_rig(visibility_timeout=15, concurrency=4, task_time_limit=TASK_TIME_LIMIT_S,
                   env={LOST_ATTEMPTS_ENV: str(KILLS + 1)})
    plan = plan_grids("vgg16-hed", "block1_conv1", f"0:{JOBS}", PatternParams(32, 3),
                      rig.settings)
    t0 = time.monotonic()
    res = submit_plan(plan, rig.storage, rig.app)
    assert res.queued_jobs == JOBS
    for _ in range(KILLS):
        log = rig.log_path
        # mid-run: this worker holds tasks, unacked, and is computing their batch (its first
        # batch loads the model, which takes seconds)
        # a ready worker takes queued tasks at its first poll; when the killed workers hold
        # what is left, it gets them back within the redelivery bound
        wait_until(lambda log=log: "] received" in log.read_text(errors="replace")
                   and rig.held() > 0, rig.redelivery_bound(), "the worker to take tasks")
        time.sleep(1.5)  # the injection's offset, not a wait: past the 0.2 s batch window
        # `convatlas worker` execs celery, so this pid is the worker's main process; with the
        # threads pool it is also the only one (no pool child exists to be killed or orphaned).
        # Killing in the instant between Redis BRPOP and kombu's unacked bookkeeping would lose
        # that message (a kombu Redis-transport limit; re-submitting queues it again), so the
        # kill lands during computation, where real crashes (OOM, segfault) happen.
        rig.kill_worker()
        assert rig.held() > 0  # the killed worker's tasks are still owed
        rig.start_worker()
    # each stall ends when the killed workers' tasks come back (redelivery) and run (a batch)
    report = rig.follow(plan, rig.redelivery_bound() + rig.batch_bound()).report("after kills")
    elapsed = time.monotonic() - t0
    check_report(rig.storage, plan, report)
    assert report["counts"] == {"done": JOBS, "failed": 0, "pending": 0, "total": JOBS,
                                "rejected": 0}
    # every tile was delivered at least once; the killed workers' tasks were delivered again
    assert received(rig.logs(), "convatlas.filter_pattern") > JOBS
    assert rig.ping_worker()
    print(f"{KILLS} SIGKILLs survived, {JOBS} jobs, 0 lost, {elapsed:.0f} s")
