"""Memory (issue 26 item 3): a worker past ``CONVATLAS_WORKER_MAX_RSS`` stops taking tasks,
finishes the ones it holds and exits for its supervisor to start a fresh one; a job that alone
costs more memory than its worker has (killed by the kernel's OOM killer in a memory cgroup) is
failed for good, with its reason, after ``LOST_ATTEMPTS`` deaths instead of looping.

The supervisor here is the test's own loop, doing what the local stack's
(``LocalStack.restart_workers``) and compose's ``restart: unless-stopped`` do: start a fresh
worker whenever one exits.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.plans.heatmaps import plan_heatmaps
from convatlas.producer.submit import submit_plan
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.jobs import existing_result
from convatlas.stack.harness import stop_worker, wait_ready
from convatlas.workers.memory_guard import (
    ATTEMPTS_KEY,
    EXIT_MEMORY,
    LOST_ATTEMPTS,
    MAX_RSS_ENV,
    MemoryGuard,
    attempt,
    parse_size,
)
from tests.faults.conftest import Rig, check_report, wait_until
from tests.faults.test_bad_input import _png
from tests.unit.test_images import photo

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
HUGE_SIDE = 9000  # 81 MP, under the 100 MP pixel limit: 243 MB as uint8 alone
MARGIN = 150 * 2**20  # above a warmed-up worker's peak (its model, a small photo's batch)

# --- the mechanisms, without a worker -----------------------------------------------------------


def test_parse_size() -> None:
    assert parse_size("") == 0
    assert parse_size("1500000") == 1_500_000
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("2G") == parse_size("2GiB") == 2 * 2**30
    with pytest.raises(ValueError, match=MAX_RSS_ENV):
        parse_size("lots")


class _FakeRedis:
    def __init__(self) -> None:
        self.h: dict[str, int] = {}

    def hincrby(self, key: str, field: str, n: int) -> int:
        self.h[field] = self.h.get(field, 0) + n
        return self.h[field]

    def expire(self, key: str, ttl: int) -> None:
        assert key == ATTEMPTS_KEY and ttl > 0

    def hdel(self, key: str, field: str) -> None:
        self.h.pop(field, None)


def test_attempts_count_only_deaths() -> None:
    """An attempt that ends (returns or raises) clears the count; starts cut short by a dead
    worker add up, and the start after LOST_ATTEMPTS of them is told to fail the job."""
    r = _FakeRedis()
    for _ in range(5):
        with attempt(r, "m") as lost:
            assert lost is None
    with pytest.raises(RuntimeError), attempt(r, "m"):
        raise RuntimeError("a retry or an error still ends the attempt")
    assert r.h == {}
    cut_short = [attempt(r, "m") for _ in range(LOST_ATTEMPTS)]  # kept: never closed
    for cm in cut_short:  # a worker killed under it: no end, no clear
        assert cm.__enter__() is None
    with attempt(r, "m") as lost:
        assert lost is not None and f"exceeded memory {LOST_ATTEMPTS} times" in lost
    with attempt(None, "m") as lost:  # no Redis: nothing counted
        assert lost is None


def test_guard_stops_consuming_drains_then_exits() -> None:
    """Past the limit: cancel the queue, wait for held tasks, then exit with EXIT_MEMORY."""
    from celery.worker import state

    events: list[Any] = []
    class Held:  # a task this worker holds (the set is weak)
        pass

    held = Held()
    state.reserved_requests.add(held)

    class Consumer:
        hostname = "w@h"
        pool = None

        class app:  # noqa: N801
            class control:  # noqa: N801
                @staticmethod
                def cancel_consumer(queue: str, **kw: Any) -> list[dict[str, Any]]:
                    events.append(("cancel", queue, kw["destination"]))
                    # the held task finishes a little later
                    threading.Timer(0.3, state.reserved_requests.discard, (held,)).start()
                    return [{kw["destination"][0]: {"ok": f"no longer consuming from {queue}"}}]

    rss = iter([100, 200, 300])
    guard = MemoryGuard(Consumer(), 250, rss=lambda: next(rss), every=0.01,
                        exit=lambda code: events.append(("exit", code, len(state.reserved_requests))))
    guard.start()
    guard.join(10)
    assert events == [("cancel", "convatlas", ["w@h"]), ("exit", EXIT_MEMORY, 0)]


# --- on the real stack --------------------------------------------------------------------------


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A cgroup v1 memory group for the worker processes; emptied and removed at teardown."""
    path = CGROUP_ROOT / f"convatlas-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.fail(f"no writable memory cgroup v1 here ({exc}): the test needs one")
    try:
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (CGROUP_ROOT / "cgroup.procs").write_text(pid)
            except OSError:  # exited meanwhile
                pass
        path.rmdir()


class Supervisor:
    """What ``restart: unless-stopped`` does, for a rig: a fresh worker whenever one exits
    (each one in ``cgroup`` if given, before it loads anything); their exit codes are kept."""

    def __init__(self, rig: Rig, cgroup: Path | None = None) -> None:
        self.rig, self.cgroup = rig, cgroup
        self.exits: list[int] = []
        self.stopped = threading.Event()
        self.start()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="supervisor")
        self.thread.start()

    def start(self) -> None:
        proc = self.rig.start_worker(wait_ready=False)
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text(str(proc.pid))
        wait_ready(proc, self.rig.log_path)

    def _watch(self) -> None:
        while not self.stopped.wait(0.2):
            proc = self.rig.worker
            if proc is not None and proc.poll() is not None:
                self.exits.append(proc.returncode)
                self.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(30)


def test_worker_past_max_rss_drains_and_is_replaced(make_rig) -> None:  # noqa: ANN001
    """Every worker passes the limit once the model is loaded: each finishes the tasks it
    holds, exits with EXIT_MEMORY, and the next one carries on; every job is done once."""
    rig = make_rig(concurrency=8, worker=False)
    # The limit lies between what a ready worker takes and what it takes once the model is
    # loaded, both measured here on one worker (a limit below the first would turn the guard
    # off: tested below); every worker then passes it with its first batch.
    probe = rig.start_worker()
    idle = _rss(probe.pid)
    warm = plan_grids("vgg16-hed", "block1_conv1", "0:2", PatternParams(32, 3), rig.settings)
    submit_plan(warm, rig.storage, rig.app)
    rig.follow(warm, rig.batch_bound()).report("warm-up")
    loaded = _rss(probe.pid)
    assert loaded > idle + 20 * 2**20, (idle, loaded)
    stop_worker(probe)
    rig.env[MAX_RSS_ENV] = str((idle + loaded) // 2)
    sup = Supervisor(rig)
    try:
        plan = plan_grids("vgg16-hed", "block1_conv1", "0:24", PatternParams(32, 3), rig.settings)
        submit_plan(plan, rig.storage, rig.app)
        # each worker's stall: it drains its batch, exits, and a fresh one starts and loads
        report = rig.follow(plan, 2 * rig.batch_bound()).report("with memory restarts")
        # the run can complete while the last worker is still draining what it held: its exit
        # follows within one batch (it holds no new task; the guard checks every second)
        wait_until(lambda: bool(sup.exits), rig.batch_bound() + 2, "a worker's memory exit")
    finally:
        sup.stop()
    check_report(rig.storage, plan, report)
    assert report["counts"]["done"] == 24 and report["counts"]["failed"] == 0
    assert sup.exits and set(sup.exits) == {EXIT_MEMORY}, sup.exits
    log = rig.logs()
    assert "no new tasks; draining" in log and "drained: exiting" in log


def _rss(pid: int) -> int:
    """A process's resident set in bytes (``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_limit_below_an_idle_worker_turns_the_guard_off(make_rig) -> None:  # noqa: ANN001
    """A limit an idle worker already passes would make it exit at every restart, serving
    nothing: the worker says so and keeps serving, unguarded."""
    rig = make_rig(concurrency=2, worker=False, env={MAX_RSS_ENV: "1M"})
    rig.start_worker()
    plan = plan_grids("vgg16-hed", "block1_conv1", "0:2", PatternParams(32, 3), rig.settings)
    submit_plan(plan, rig.storage, rig.app)
    report = rig.follow(plan, rig.batch_bound()).report("with the guard off")
    assert report["counts"]["done"] == 2
    assert "memory guard off" in rig.logs() and rig.worker is not None and rig.worker.poll() is None


def _huge_photo(path: Path, side: int) -> None:
    """A JPEG under the pixel limit whose decoded copies (uint8, then float at full size) cost
    far more than the margin its worker is given."""
    from PIL import Image

    ramp = (np.arange(side) % 256).astype(np.uint8)
    arr = np.empty((side, side, 3), np.uint8)
    arr[..., 0], arr[..., 1] = ramp[None, :], ramp[:, None]
    arr[..., 2] = 128
    Image.fromarray(arr).save(path, "JPEG", quality=50)


@pytest.mark.slow
def test_job_that_alone_exceeds_memory_fails_for_good(  # noqa: ANN001
        make_rig, memory_cgroup: Path, tmp_path: Path) -> None:
    """In a memory cgroup sized to a warmed-up worker plus a margin, an 81-megapixel photo gets
    its worker OOM-killed every time; after LOST_ATTEMPTS deaths it is recorded as failed with
    the reason, and the ordinary photos of its run are done."""
    # one task per worker: the OOM kill takes only the huge job (test above: the others in
    # flight when a worker drains complete)
    rig = make_rig(visibility_timeout=15, concurrency=1, worker=False)
    sup = Supervisor(rig, memory_cgroup)
    try:
        warm = tmp_path / "warm"
        warm.mkdir()
        (warm / "w.png").write_bytes(_png(photo(48, 64, 99)))
        warm_plan = plan_heatmaps([str(warm)], "efficientnet-lite0", None, None, rig.settings)
        submit_plan(warm_plan, rig.storage, rig.app)
        rig.follow(warm_plan, rig.batch_bound()).report("warm-up")
        peak = int((memory_cgroup / "memory.max_usage_in_bytes").read_text())
        (memory_cgroup / "memory.limit_in_bytes").write_text(str(peak + MARGIN))

        folder = tmp_path / "photos"
        folder.mkdir()
        for i in range(3):
            (folder / f"p{i}.png").write_bytes(_png(photo(48, 64, i)))
        _huge_photo(folder / "huge.jpg", HUGE_SIDE)
        plan = plan_heatmaps([str(folder)], "efficientnet-lite0", None, None, rig.settings)
        submit_plan(plan, rig.storage, rig.app)
        # each death: the message comes back (redelivery) and a fresh worker runs it
        report = rig.follow(plan, rig.redelivery_bound() + 2 * rig.batch_bound()).report(
            "with an OOM job")
    finally:
        sup.stop()
    check_report(rig.storage, plan, report, failed={"huge.jpg"})
    assert report["counts"]["done"] == 3 and report["counts"]["failed"] == 1
    huge = next(j for j in plan.jobs if j.name == "huge.jpg")
    rec = existing_result(huge, rig.storage)
    assert rec is not None and rec.status == "failed"
    assert f"exceeded memory {LOST_ATTEMPTS} times" in rec.error
    assert len(sup.exits) >= LOST_ATTEMPTS and EXIT_MEMORY not in sup.exits  # SIGKILLed: -9
    assert int((memory_cgroup / "memory.oom_control").read_text().split("oom_kill ")[1]
               .split()[0]) >= LOST_ATTEMPTS


def test_local_stack_restarts_a_worker_that_exited(tmp_path: Path) -> None:
    """``LocalStack.restart_workers`` (what ``convatlas stack up`` runs every second): a
    worker that exited on its own (the memory guard's code) gets a fresh process; one stopped
    on purpose does not."""
    import sys

    from convatlas.stack.supervisor import LocalStack

    stack = LocalStack(tmp_path / "stack", workers=2)
    exits_75, exits_0 = stack.workers
    exits_75.argv = [sys.executable, "-c", f"raise SystemExit({EXIT_MEMORY})"]
    exits_0.argv = [sys.executable, "-c", "pass"]
    for w in stack.workers:
        w.launch({})
        assert w.proc is not None
        w.proc.wait(30)
    first = exits_75.proc
    assert stack.restart_workers() == [f"worker0 (exit code {EXIT_MEMORY})"]
    assert exits_75.proc is not first and exits_0.proc is not None
    exits_75.proc.wait(30)
    exits_0_proc = exits_0.proc
    assert stack.restart_workers() == [f"worker0 (exit code {EXIT_MEMORY})"]
    assert exits_0.proc is exits_0_proc  # exit code 0: left stopped
    exits_75.proc.wait(30)
