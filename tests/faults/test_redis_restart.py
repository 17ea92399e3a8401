"""Redis restarted mid-run: the worker reconnects and finishes the run, the producer's --wait
keeps following it, and the producer's own broker connection works again afterwards."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import submit_plan, wait_for_run
from convatlas.shared.engine.patterns import PatternParams
from tests.faults.conftest import WAIT_S, check_report, wait_until

pytestmark = pytest.mark.redis_broker  # about the Redis transport itself

JOBS = 64


def test_redis_restart_mid_run(make_rig) -> None:  # noqa: ANN001
    rig = make_rig(visibility_timeout=15, concurrency=4)
    plan = plan_grids("vgg16-hed", "block1_conv1", f"0:{JOBS}", PatternParams(32, 3),
                      rig.settings)
    submit_plan(plan, rig.storage, rig.app)
    waited: dict[str, Any] = {}

    def follow() -> None:  # what `convatlas submit … --wait` does, across the restart
        try:
            waited["report"] = wait_for_run(rig.storage, plan.run_id, WAIT_S, progress=False)
        except Exception as exc:
            waited["error"] = exc

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    markers = {j.marker for j in plan.jobs}
    wait_until(lambda: len(markers & set(rig.storage.list_keys("results/"))) >= 4, 90,
               "the first tiles")
    # The rig's Redis keeps an append-only file, as the local stack's and a production Redis
    # do; without one the queue would be lost, and re-submitting the run would queue it again.
    client = rig.redis_client()
    assert client.llen("convatlas") > 0  # mid-run: tasks still queued
    client.close()
    rig.redis.stop()
    time.sleep(2)
    rig.redis.start()  # same port, same password, the append-only file replayed
    follower.join(WAIT_S + 10)
    assert "error" not in waited, waited.get("error")
    report = waited["report"]
    check_report(rig.storage, plan, report)
    assert report["counts"]["done"] == JOBS
    log = rig.logs()
    assert "Connection to broker lost" in log or "Cannot connect to" in log, log[-2000:]
    assert rig.worker.poll() is None and rig.ping_worker()

    # the producer's broker connection comes back too: a second run submitted now completes
    plan2 = plan_grids("vgg16-hed", "block1_conv2", "0:8", PatternParams(32, 3), rig.settings)
    assert submit_plan(plan2, rig.storage, rig.app).queued_jobs == 8
    check_report(rig.storage, plan2, wait_for_run(rig.storage, plan2.run_id, WAIT_S,
                                                  progress=False))
