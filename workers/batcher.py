"""Worker-side micro-batching: many one-job tasks, one model call.

A task is one filter or one photo, but a model call on 1 input wastes the accelerator. The worker
runs tasks in threads (``--pool threads --concurrency N``); each task thread calls
``Batcher.run(job)``, which queues the job and blocks on a future. One collector thread per
process waits up to ``batch_window_ms`` after the first job (or until ``max_batch`` jobs), groups
the jobs by kind and runs each group with its kind's runner (``convatlas.shared.jobs.run_jobs``),
which batch by (model, layer, params) themselves. All model calls thus
happen in one thread, so the models loaded once per process are never used concurrently.

A failing batch is retried job by job, so one bad job fails alone (but an unreachable storage
fails the whole batch at once: its tasks retry later). No Celery import here: the
batcher is plain threading and can be tested or reused without a broker.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from convatlas.shared.jobs import KINDS, Job, JobResult, kind_of, run_jobs
from convatlas.shared.storage import Storage, StorageUnavailable

log = logging.getLogger(__name__)

Runner = Callable[[list[Job], Storage], list[JobResult]]


def default_runner(jobs: list[Job], storage: Storage) -> list[JobResult]:
    """One batched call per kind (``convatlas.shared.jobs.run_jobs``); results in order."""
    return run_jobs(jobs, storage)


@dataclass
class _Item:
    job: Job
    prepared: Any = None
    future: Future[JobResult] = field(default_factory=Future)
    arrived: float = field(default_factory=time.perf_counter)  # when its task handed it over


@dataclass
class BatchStats:
    """Counters for logs and tests: how big the model calls really were."""

    batches: int = 0
    jobs: int = 0
    largest: int = 0
    fallbacks: int = 0
    sizes: list[int] = field(default_factory=list)
    model_seconds: float = 0.0  # in model calls
    input_wait_seconds: float = 0.0  # the batch thread idle, waiting for prepared jobs


class Batcher:
    """Collects jobs from many threads and runs them in batches in one background thread."""

    def __init__(
        self,
        storage: Storage,
        window_ms: int = 50,
        max_batch: int = 64,
        runner: Runner | None = None,
        writers: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.storage = storage
        self.window = max(0, window_ms) / 1000.0
        self.max_batch = max_batch
        self.staged = runner is None  # the pipeline of the kinds' stages, else one runner
        self.runner = runner or default_runner
        self.stats = BatchStats()
        # bounded: task threads block here rather than pile prepared photos up
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=2 * max_batch)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Decode (in task threads) and encode (writers) are CPU codecs: as many at once as the
        # host has cores, so they keep up with an accelerator (never fewer than 8 and 4).
        cores = os.cpu_count() or 1
        self._writers = ThreadPoolExecutor(writers or max(4, cores),
                                           thread_name_prefix="convatlas-writer")
        self._write_slots = threading.BoundedSemaphore(2 * max_batch)  # writes in flight
        self._idle_since = time.perf_counter()
        self._prepare_slots = threading.BoundedSemaphore(max(8, cores))

    def run(self, job: Job, timeout: float | None = None) -> JobResult:
        """Run ``job`` in the next batch; block until its own result (or its own exception).

        With the kinds' stages, the calling (task) thread first prepares the job (its only
        "already done?" check, then the fetch and decode), so the batch thread does model
        calls only; writes happen in the writer pool. ``TimeoutError`` after ``timeout``
        seconds; the job may still run later (harmless: jobs are idempotent).
        """
        item = _Item(job)
        stages = kind_of(job).stages if self.staged else None
        if stages is not None:
            with self._prepare_slots:  # at most max(8, cores) fetches and decodes at once
                item.prepared = stages.prepare(job, self.storage)
            if isinstance(item.prepared, JobResult):
                return item.prepared
        self._ensure_thread()
        self._queue.put(item, timeout=timeout)
        return item.future.result(timeout)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="convatlas-batcher", daemon=True
                )
                self._thread.start()

    def _collect(self) -> list[_Item]:
        """Block for one job, then gather more while they keep coming.

        The window restarts at each arrival (deliveries trickle in as task threads free up and
        pre-check their jobs), up to ``4 × window`` in all, or until the batch is full.
        """
        items = [self._queue.get()]
        cap = time.monotonic() + 4 * self.window
        while len(items) < self.max_batch:
            left = min(self.window, cap - time.monotonic())
            try:
                items.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _loop(self) -> None:
        while True:
            items = self._collect()
            try:
                self._run_batch(items)
            except BaseException as exc:  # never let the collector die with futures pending
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(exc)

    def _run_batch(self, items: Sequence[_Item]) -> None:
        if self.staged and all(kind_of(it.job).stages is not None for it in items):
            self._run_stages(items)
            return
        jobs = [it.job for it in items]
        t0 = time.perf_counter()
        try:
            results = self.runner(jobs, self.storage)
            if len(results) != len(items):
                raise RuntimeError(f"runner returned {len(results)} results for {len(items)} jobs")
        except StorageUnavailable as exc:  # an outage, not a bad job: all retry later
            log.warning("batch of %d jobs: storage unavailable (%s)", len(items), exc)
            for it in items:
                it.future.set_exception(exc)
        except Exception as exc:
            log.warning("batch of %d jobs failed (%s: %s); running them one by one",
                        len(items), type(exc).__name__, exc)
            self.stats.fallbacks += 1
            self._run_one_by_one(items)
        else:
            for it, res in zip(items, results, strict=True):
                it.future.set_result(res)
        s = self.stats
        s.batches += 1
        s.jobs += len(items)
        s.largest = max(s.largest, len(items))
        s.sizes = (s.sizes + [len(items)])[-1000:]
        log.info("batch of %d jobs (%s) in %.2f s", len(items),
                 ", ".join(sorted({j.kind for j in jobs})), time.perf_counter() - t0)

    def _run_stages(self, items: Sequence[_Item]) -> None:
        """Model calls only, one per kind; each result goes to the writer pool, which resolves
        the job's future once its outputs and marker are stored."""
        t0 = time.perf_counter()
        # the model thread's wait for input: idle since its last batch, but only while this
        # batch's jobs were already on their way (a worker idle between runs waits for nothing)
        waited = max(0.0, t0 - max(self._idle_since, min(it.arrived for it in items)))
        self._idle_since = t0
        by_kind: dict[str, list[_Item]] = {}
        for it in items:
            by_kind.setdefault(kind_of(it.job).name, []).append(it)
        for name, group in by_kind.items():
            stages = KINDS[name].stages
            assert stages is not None
            start = time.perf_counter()
            try:
                outputs = stages.compute([it.job for it in group], [it.prepared for it in group],
                                         len(group))
            except StorageUnavailable as exc:
                for it in group:
                    it.future.set_exception(exc)
                continue
            except Exception as exc:
                log.warning("batch of %d jobs failed (%s: %s); running them one by one",
                            len(group), type(exc).__name__, exc)
                self.stats.fallbacks += 1
                outputs = []
                for it in group:
                    try:
                        outputs.append(stages.compute([it.job], [it.prepared], 1)[0])
                    except Exception as one:
                        it.future.set_exception(one)
                        outputs.append(None)
            seconds = time.perf_counter() - start
            info = {"seconds": seconds / len(group), "batch": len(group),
                    "input_wait_seconds": waited / len(items)}
            for it, out in zip(group, outputs, strict=True):
                if not it.future.done():
                    self._write_slots.acquire()  # backpressure: the writers are behind
                    self._writers.submit(self._write, stages, it, out, info)
        s = self.stats
        model = time.perf_counter() - t0
        s.batches += 1
        s.jobs += len(items)
        s.largest = max(s.largest, len(items))
        s.sizes = (s.sizes + [len(items)])[-1000:]
        s.model_seconds += model
        s.input_wait_seconds += waited
        self._idle_since = time.perf_counter()
        log.info("batch of %d jobs (%s): model %.2f s, waited %.2f s for input; queued %d",
                 len(items), ", ".join(sorted(by_kind)), model, waited, self._queue.qsize())

    def _write(self, stages: Any, it: _Item, output: Any, info: dict[str, Any]) -> None:
        try:
            it.future.set_result(stages.write(it.job, it.prepared, output, self.storage, info))
        except BaseException as exc:
            it.future.set_exception(exc)
        finally:
            self._write_slots.release()

    def _run_one_by_one(self, items: Sequence[_Item]) -> None:
        for it in items:
            try:
                (res,) = self.runner([it.job], self.storage)
            except Exception as exc:
                it.future.set_exception(exc)
            else:
                it.future.set_result(res)


_process_batcher: tuple[int, Batcher] | None = None
_process_lock = threading.Lock()


def process_batcher(storage_factory: Callable[[], Storage], window_ms: int,
                    max_batch: int) -> Batcher:
    """The batcher of this process (created on first use, again after a fork)."""
    global _process_batcher
    with _process_lock:
        if _process_batcher is None or _process_batcher[0] != os.getpid():
            _process_batcher = (os.getpid(), Batcher(storage_factory(), window_ms, max_batch))
        return _process_batcher[1]
