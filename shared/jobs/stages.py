"""A job kind as three stages, so the model never waits for storage or decoding.

* ``prepare(job, storage)``: the recorded outcome if there is one (the only "already done?"
  check a job gets), else what the model needs (a photo's reduced decode, its bytes);
* ``compute(jobs, prepared, batch_size)``: the model calls only, one output per job;
* ``write(job, prepared, output, storage, info)``: encode and upload, the marker last.

A worker runs ``prepare`` in its task threads, ``compute`` in its one batch thread and
``write`` in a writer pool (``convatlas.workers.batcher``); local mode runs the same stages in
one process (``run_staged``): a loader pool, the model, a writer pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convatlas.shared.jobs.common import JobResult, io_map
from convatlas.shared.storage import Storage

Prepare = Callable[[Any, Storage], Any]
Compute = Callable[[list[Any], list[Any], int], list[Any]]
Write = Callable[[Any, Any, Any, Storage, dict[str, Any]], JobResult]


@dataclass(frozen=True)
class Stages:
    prepare: Prepare
    compute: Compute
    write: Write


def run_staged(stages: Stages, jobs: list[Any], storage: Storage, batch_size: int) -> list[JobResult]:
    """Every job's result, in order: prepared in threads, computed in one call, written in
    threads. A bad input fails its own job in ``prepare``."""
    prepared = io_map(lambda j: stages.prepare(j, storage), jobs)
    todo = [i for i, p in enumerate(prepared) if not isinstance(p, JobResult)]
    results: list[JobResult | None] = [p if isinstance(p, JobResult) else None for p in prepared]
    if todo:
        t0 = time.perf_counter()
        outputs = stages.compute([jobs[i] for i in todo], [prepared[i] for i in todo], batch_size)
        info = {"seconds": (time.perf_counter() - t0) / len(todo), "batch": len(todo),
                "input_wait_seconds": 0.0}
        written = io_map(lambda k: stages.write(jobs[todo[k]], prepared[todo[k]], outputs[k],
                                                storage, info), range(len(todo)))
        for i, res in zip(todo, written, strict=True):
            results[i] = res
    return [r for r in results if r is not None]
