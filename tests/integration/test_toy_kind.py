"""A job kind is one entry: the toy kind of ``tests/toy_kind.py`` (one ``register`` call, named
nowhere in the package) runs in this process (``run_jobs``, the local runner with its post-run
step) and on the fleet (a real ``convatlas worker`` on Redis and SeaweedFS that imports the
module through ``CONVATLAS_KIND_MODULES``: its job tasks, the run's ``finish_run``, the post-run
task), with the same results."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from convatlas.producer.local import run_local
from convatlas.producer.plans.plan import Plan
from convatlas.producer.submit import submit_plan, wait_for_run
from convatlas.shared.jobs import KINDS, TASK_NAMES, job_from_dict, run_jobs
from convatlas.shared.jobs.common import read_json
from convatlas.shared.storage import LocalStorage, Storage
from convatlas.stack.servers import RedisServer, SeaweedS3Server
from tests import toy_kind
from tests.pipeline_fixtures import Fleet, started_fleet
from tests.toy_kind import ToyJob, sum_key

REDIS_DB = 15  # this module's own database: other tests' workers must not take its tasks
WAIT_S = 120
NUMBERS = [1, 2, 3, -4, 5, 6]  # -4: a bad input, failed alone
SQUARES = sum(n * n for n in NUMBERS if n >= 0)


def toy_plan(tag: str) -> Plan:
    return Plan("toy", "toy-model", [ToyJob(tag, n) for n in NUMBERS], run_id=f"toy-{tag}")


def wait_for_key(storage: Storage, key: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while (found := read_json(storage, key)) is None:
        assert time.monotonic() < deadline, f"{key} not written after {timeout:.0f} s"
        time.sleep(0.5)
    return found


def test_the_toy_kind_is_one_registered_entry() -> None:
    assert KINDS["toy"] is toy_kind.TOY
    assert TASK_NAMES["toy"] == "convatlas.test_toy"
    assert TASK_NAMES["toy-sum"] == "convatlas.test_toy_sum"
    assert job_from_dict(ToyJob("x", 3).to_dict()) == ToyJob("x", 3)


def test_the_toy_kind_runs_locally(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "jobs")
    results = run_jobs([ToyJob("a", 3), ToyJob("a", -1)], storage)
    assert [r.status for r in results] == ["done", "failed"]
    assert results[0].info["square"] == 9

    plan = toy_plan("local")
    report = run_local(plan, tmp_path / "out", progress=False)
    assert report["counts"] == {"done": 5, "failed": 1, "pending": 0, "total": 6, "rejected": 0}
    assert report["toy_total"] == SQUARES  # the post-run step, run by the local runner
    assert "sum_seconds" in report["timing"]
    assert json.loads((tmp_path / "out" / sum_key(plan.run_id)).read_bytes())["total"] == SQUARES
    again = run_local(plan, tmp_path / "out", progress=False)  # nothing left to run: still sums
    assert again["timing"]["jobs_run"] == 0 and again["toy_total"] == SQUARES


@pytest.fixture(scope="module")
def toy_fleet(
    redis_server: RedisServer, s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    with started_fleet(redis_server, s3_server, tmp_path_factory.mktemp("toy-fleet"), db=REDIS_DB,
                       extra_env={"CONVATLAS_KIND_MODULES": "tests.toy_kind"}) as f:
        yield f


def test_the_toy_kind_runs_on_the_fleet(toy_fleet: Fleet, tmp_path: Path) -> None:
    plan = toy_plan(uuid.uuid4().hex[:8])
    res = submit_plan(plan, toy_fleet.storage, toy_fleet.app, toy_fleet.settings)
    assert res.queued_jobs == len(NUMBERS)
    report = wait_for_run(toy_fleet.storage, plan.run_id, WAIT_S, progress=False)
    assert report["complete"] and report["counts"]["done"] == 5
    assert [j["error"] for j in report["jobs"] if j["status"] == "failed"] == ["negative number -4"]
    summary = wait_for_key(toy_fleet.storage, sum_key(plan.run_id), WAIT_S)  # queued by finish_run
    logs = toy_fleet.log()
    assert "convatlas.test_toy[" in logs and "convatlas.test_toy_sum[" in logs, logs[-3000:]

    local = run_local(toy_plan(plan.run_id.removeprefix("toy-")), tmp_path, progress=False)
    assert summary["total"] == local["toy_total"] == SQUARES
    assert [j.get("square") for j in report["jobs"]] == [j.get("square") for j in local["jobs"]]

    # submitted again: no job to run, the post-run step is queued by the submission itself
    toy_fleet.storage.delete(sum_key(plan.run_id))
    res2 = submit_plan(plan, toy_fleet.storage, toy_fleet.app, toy_fleet.settings)
    assert (res2.queued_jobs, res2.queued_tasks) == (0, 1)
    assert wait_for_key(toy_fleet.storage, sum_key(plan.run_id), WAIT_S)["total"] == SQUARES
