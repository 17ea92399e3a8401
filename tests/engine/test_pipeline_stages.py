"""The worker's pipeline: task threads prepare (the only "done?" check, fetch, decode), the
batch thread only computes, a writer pool stores; every job still gets its own result."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.jobs import KINDS, FilterJob
from convatlas.shared.storage import LocalStorage
from convatlas.workers.batcher import Batcher


def test_stages_run_in_their_own_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, set[str]] = {"prepare": set(), "compute": set(), "write": set()}
    real = KINDS["filter"].stages
    assert real is not None

    def record(stage: str, fn):  # noqa: ANN001, ANN202
        def wrapped(*a, **k):  # noqa: ANN002, ANN003, ANN202
            seen[stage].add(threading.current_thread().name.split("_")[0].rstrip("-0123456789"))
            return fn(*a, **k)
        return wrapped

    staged = dataclasses.replace(real, prepare=record("prepare", real.prepare),
                                 compute=record("compute", real.compute),
                                 write=record("write", real.write))
    monkeypatch.setitem(KINDS, "filter", dataclasses.replace(KINDS["filter"], stages=staged))
    storage = LocalStorage(tmp_path)
    b = Batcher(storage, window_ms=300, max_batch=8)
    params = PatternParams(size=16, steps=1)
    jobs = [FilterJob("vgg16-hed", "0" * 12, "block1_conv1", f, params) for f in range(8)]
    with ThreadPoolExecutor(8, thread_name_prefix="task") as pool:
        results = list(pool.map(lambda j: b.run(j, timeout=300), jobs))
    assert [r.status for r in results] == ["done"] * 8
    assert seen["prepare"] == {"task"}  # in the callers' threads
    assert seen["compute"] == {"convatlas-batcher"}  # the model thread does model calls only
    assert seen["write"] == {"convatlas-writer"}
    assert b.stats.batches == 1 and b.stats.model_seconds > 0
    assert all(storage.exists(j.marker) for j in jobs)
    again = b.run(jobs[0], timeout=30)  # prepared as done: no batch at all
    assert again.status == "skipped" and b.stats.batches == 1


def test_idle_time_between_runs_is_not_input_wait(tmp_path: Path) -> None:
    """The model thread's logged wait counts only time its batch's jobs were already in the
    pipeline: a worker idle between two runs did not wait for input."""
    import time

    b = Batcher(LocalStorage(tmp_path), window_ms=50, max_batch=8)
    params = PatternParams(size=16, steps=1)
    first = b.run(FilterJob("vgg16-hed", "0" * 12, "block1_conv1", 0, params), timeout=300)
    assert first.status == "done"
    idle = 1.5
    time.sleep(idle)  # nobody submits anything
    before = b.stats.input_wait_seconds
    second = b.run(FilterJob("vgg16-hed", "0" * 12, "block1_conv1", 1, params), timeout=300)
    assert second.status == "done" and b.stats.batches == 2
    assert b.stats.input_wait_seconds - before < idle / 3, b.stats
