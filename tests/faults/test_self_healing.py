"""Runs heal themselves: lost messages are queued again by the fleet's healer, with nobody
re-submitting (CONVATLAS_REQUEUE_AFTER is 8 s here, the visibility timeout an hour). Each run is
followed with a stall bound of one healer delay (``Rig.heal_bound``) plus one batch."""

from __future__ import annotations

import json
import time

import pytest

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import run_counter, submit_plan
from convatlas.shared.engine.patterns import PatternParams
from tests.faults.conftest import check_report, received, wait_until

JOBS = 24
HOUR = 3600
REQUEUE = 8  # s; short: jobs a live worker holds (a first batch loading the model) stay held


def _plan(rig, n: int = JOBS, seed: int = 0):  # noqa: ANN001, ANN202
    return plan_grids("vgg16-hed", "block1_conv1", f"0:{n}", PatternParams(24, 2, seed=seed),
                      rig.settings)


def _healing_bound(rig) -> float:  # noqa: ANN001
    """A lost job is queued again within the heal bound (its run's clock restarts at every
    outcome), then gets its outcome within one batch."""
    return rig.heal_bound() + rig.batch_bound()


def test_sigkilled_worker_with_prefetched_tasks_heals(make_rig) -> None:  # noqa: ANN001
    """The killed worker's unacked tasks would come back only after an hour; the healer
    queues them again after 8 s without progress, and a second worker finishes the run."""
    rig = make_rig(visibility_timeout=HOUR, concurrency=8, requeue_after=REQUEUE)
    plan = _plan(rig)
    assert submit_plan(plan, rig.storage, rig.app).queued_jobs == JOBS
    # a ready worker takes queued tasks at its first poll
    wait_until(lambda: rig.held() > 0, rig.batch_bound(), "the worker to hold tasks")
    rig.kill_worker()
    rig.start_worker()
    counter = run_counter(rig.app, rig.settings, plan.run_id)
    report = rig.follow(plan, _healing_bound(rig), counter=counter).report("after the kill")
    check_report(rig.storage, plan, report)
    assert report["counts"]["done"] == JOBS
    assert received(rig.logs(), "convatlas.filter_pattern") > JOBS  # some ran twice: harmless
    if rig.broker == "redis":  # RabbitMQ requeues a dead consumer's messages by itself
        assert "jobs again" in rig.logs()  # the healer, not the visibility timeout
        assert report["healing"]["requeued"] > 0  # counted in the report


@pytest.mark.redis_broker
def test_message_deleted_from_the_queue_heals(make_rig) -> None:  # noqa: ANN001
    """A message lost in kombu's BRPOP window looks like a message gone from the queue."""
    rig = make_rig(visibility_timeout=HOUR, concurrency=8, requeue_after=REQUEUE, worker=False)
    redis = rig.redis_client()
    plan = _plan(rig, 8, seed=1)
    assert submit_plan(plan, rig.storage, rig.app).queued_jobs == 8
    lost = json.loads(redis.lpop("convatlas"))  # gone for good
    assert lost["headers"]["task"] == "convatlas.filter_pattern"
    rig.start_worker()
    t0 = time.monotonic()
    counter = run_counter(rig.app, rig.settings, plan.run_id)
    report = rig.follow(plan, _healing_bound(rig), counter=counter).report("one message lost")
    check_report(rig.storage, plan, report)
    assert "jobs again" in rig.logs()
    assert report["healing"]["requeued"] >= 1, report.get("healing")
    print(f"healed one lost message in {time.monotonic() - t0:.1f} s")


@pytest.mark.redis_broker
def test_redis_restarted_without_persistence_heals(make_rig) -> None:  # noqa: ANN001
    """The queue and the run's counters are gone; the healer rebuilds them from storage."""
    rig = make_rig(visibility_timeout=HOUR, concurrency=8, requeue_after=REQUEUE, worker=False,
                   persistent=False)
    plan = _plan(rig, 8, seed=2)
    assert submit_plan(plan, rig.storage, rig.app).queued_jobs == 8
    rig.redis.stop()
    rig.redis.start()
    assert rig.redis_client().llen("convatlas") == 0  # everything queued is lost
    rig.start_worker()
    report = rig.follow(plan, _healing_bound(rig)).report("Redis emptied")
    check_report(rig.storage, plan, report)
    assert "rebuilding it from storage" in rig.logs()


@pytest.mark.redis_broker
def test_lost_report_message_heals(make_rig) -> None:  # noqa: ANN001
    """Every job has its outcome but the run's finish_run message is gone (its worker was
    SIGKILLed holding it): the healer queues the report again."""
    from convatlas.shared.report import active_key, report_key

    rig = make_rig(visibility_timeout=HOUR, concurrency=8, requeue_after=REQUEUE)
    plan = _plan(rig, 4, seed=3)
    submit_plan(plan, rig.storage, rig.app)
    counter = run_counter(rig.app, rig.settings, plan.run_id)
    rig.follow(plan, rig.batch_bound(), counter=counter).report()
    # as it was just before the lost report: counters complete, run active, no report
    rig.storage.delete(report_key(plan.run_id))
    rig.storage.put_bytes(active_key(plan.run_id), b"", "text/plain")
    counter.start({0: 4})
    counter.mark_many((i, 0) for i in range(4))
    assert counter.seal(4)  # complete: the finish_run message that would follow is "lost"
    # the healer queues the report once the run had no outcome for requeue_after; one task
    wait_until(lambda: rig.storage.exists(report_key(plan.run_id)), _healing_bound(rig),
               "the healer to queue the report again")
    assert "queued its report again" in rig.logs()


def test_a_slow_job_on_a_live_worker_is_not_queued_again(make_rig) -> None:  # noqa: ANN001
    """A job that runs far longer than CONVATLAS_REQUEUE_AFTER on a live worker is slow, not
    lost: the healer sees it held (Celery's inspect) and queues nothing again."""
    # the job is slow on purpose: its time limit stays far above it (visibility − 2 s)
    rig = make_rig(visibility_timeout=HOUR, concurrency=8, requeue_after=2,
                   task_time_limit=HOUR - 2)
    # one filter of block3_conv1, 1500 book steps at 64 px: ≈ 20 s on 2 idle cores (400 steps
    # took 7 s there, too short for the check below), far over the 2 s requeue delay
    plan = plan_grids("vgg16-hed", "block3_conv1", "0:1", PatternParams(64, 1500, seed=4),
                      rig.settings)
    t0 = time.monotonic()
    assert submit_plan(plan, rig.storage, rig.app).queued_jobs == 1
    counter = run_counter(rig.app, rig.settings, plan.run_id)
    # one job, as slow as it is: its outcome within its task time limit (the batch bound)
    report = rig.follow(plan, rig.batch_bound(), counter=counter).report("the slow job")
    took = time.monotonic() - t0
    check_report(rig.storage, plan, report)
    assert took > 4 * 2, f"the job took only {took:.1f} s: the test proves nothing"
    assert "still held by live workers" in rig.logs()
    assert "jobs again" not in rig.logs()
    assert report["healing"]["requeued"] == 0, report["healing"]
    assert received(rig.logs(), "convatlas.filter_pattern") == 1
