"""Duplicates (issue 26, item 4): a task delivered again while its first delivery still runs.

* Redis: a visibility timeout (5 s) shorter than the task. kombu's restore sweep puts the
  unacked message back in the queue and the worker takes it a second time.
* RabbitMQ: a 5 s ``consumer_timeout`` (checked every second: ``channel_tick_interval``). The
  broker closes the channel of a consumer that holds a delivery unacked for longer and
  requeues what that channel held; the worker reconnects and takes it again.

Either way, jobs run more than once. The promise: every output is the bytes a clean,
in-process computation of the same job gives (results are content-addressed and
deterministic, so a second run rewrites the same object); every outcome is counted once (the
run's bitmap: the report's ``healing.duplicates`` counts the others); and each grid page's
reduce is queued once (one reduce task id per page, however often that message is delivered).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.plans.plan import Plan
from convatlas.producer.submit import submit_plan
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.jobs import run_jobs
from convatlas.shared.storage import LocalStorage, S3Storage
from convatlas.stack.servers import RabbitMQServer
from tests.faults.conftest import TASK_TIME_LIMIT_S, check_report, received

ACK_LIMIT_S = 5  # the visibility timeout (Redis) / consumer_timeout (RabbitMQ)
# 16 filters of a deep layer at 64 px and 100 steps: a batch of 8 takes about 9 s on a 2-core
# CPU, longer than ACK_LIMIT_S (the first one also loads the model), so deliveries outlive it
FILTERS, PARAMS, LAYER = "0:16", PatternParams(64, 100), "block3_conv1"
EXECUTION_FACTS = {"batch", "seconds", "input_wait_seconds"}


@pytest.fixture(scope="module")
def strict_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """A node of its own that times out consumers after ACK_LIMIT_S, checked every second."""
    node = RabbitMQServer(tmp_path_factory.mktemp("rabbitmq-strict"),
                          rabbit_env={"consumer_timeout": ACK_LIMIT_S * 1000,
                                      "channel_tick_interval": 1000})
    node.start()
    try:
        yield node
    finally:
        node.stop()


def reduce_ids(log: str) -> dict[str, int]:
    """Reduce task id → how often a worker received it."""
    ids: dict[str, int] = {}
    for m in re.finditer(r"Task convatlas\.reduce_grid\[([0-9a-f-]+)\] received", log):
        ids[m.group(1)] = ids.get(m.group(1), 0) + 1
    return ids


def assert_same_as_in_process(storage: S3Storage, plan: Plan) -> None:
    """Every output in the bucket is byte-identical to the same job computed here; the record
    too, but for the facts of the execution that wrote it (its batch, its timings)."""
    with tempfile.TemporaryDirectory() as d:
        local = LocalStorage(Path(d))
        run_jobs(list(plan.jobs), local)
        for job in plan.jobs:
            for name, key in job.outputs().items():
                ours, clean = storage.get_bytes(key), local.get_bytes(key)
                if key.endswith(".json"):
                    ours, clean = (
                        {k: v for k, v in json.loads(b).items() if k not in EXECUTION_FACTS}
                        for b in (ours, clean))
                assert ours == clean, (
                    f"{job.layer}/{job.filter} {name}: the fleet's output differs from a clean run")


@pytest.mark.slow
def test_a_job_delivered_twice_counts_once(make_rig, broker: str,  # noqa: ANN001
                                           request: pytest.FixtureRequest) -> None:
    if broker == "rabbitmq":
        node = request.getfixturevalue("strict_rabbit")
        rig = make_rig(concurrency=8, task_time_limit=TASK_TIME_LIMIT_S, node=node)
    else:
        rig = make_rig(visibility_timeout=ACK_LIMIT_S, concurrency=8,
                       task_time_limit=TASK_TIME_LIMIT_S)
    plan = plan_grids("vgg16-hed", LAYER, FILTERS, PARAMS, rig.settings)
    jobs, pages = len(plan.jobs), len(plan.grids)
    t0 = time.monotonic()
    submit_plan(plan, rig.storage, rig.app)
    # duplicates slow a run down but never stall it: each delivery ends within a batch, and a
    # redelivered one comes back within the ack limit plus one restore sweep
    report = rig.follow(plan, ACK_LIMIT_S + rig.restore_every + rig.batch_bound()).report(
        "with duplicate deliveries")
    elapsed = time.monotonic() - t0
    log = rig.logs()
    deliveries = received(log, "convatlas.filter_pattern")
    # the fault happened: some job was delivered (and so run or skipped) more than once
    assert deliveries > jobs, f"no duplicate delivery ({deliveries} for {jobs} jobs)\n" + log[-3000:]
    # … and each outcome was counted once: every job once in the report, done
    check_report(rig.storage, plan, report)
    assert report["counts"] == {"done": jobs, "failed": 0, "pending": 0, "total": jobs,
                                "rejected": 0}
    # one reduce queued per page, however often that message was delivered
    fired = reduce_ids(log)
    assert len(fired) == pages, f"reduce queued {len(fired)} times for {pages} page(s): {fired}"
    assert_same_as_in_process(rig.storage, plan)
    dups = (report.get("healing") or {}).get("duplicates", 0)
    print(f"{broker}: {deliveries} deliveries of {jobs} jobs, {dups} outcomes counted again "
          f"and ignored, {sum(fired.values())} reduce deliveries for {pages} page(s), "
          f"{elapsed:.0f} s")
