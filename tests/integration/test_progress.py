"""Run progress in a real Redis: concurrent, redelivered outcomes are counted once, and a page's
reducer and a run's report are each fired by exactly one marker."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
import redis as redis_lib

from convatlas.shared.progress import RunProgress
from convatlas.stack.servers import RedisServer

PAGES = {0: 64, 1: 64, 2: 10}
_real_time = time.time  # before any test skews it


def _client(server: RedisServer) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(server.url.rsplit("/", 1)[0] + "/5")


def test_concurrent_redelivered_tiles_fire_each_page_once(redis_server: RedisServer) -> None:
    client = _client(redis_server)
    progress = RunProgress(client, f"g-{uuid.uuid4().hex[:12]}")
    progress.start(PAGES)
    progress.seal(sum(PAGES.values()))
    tiles = [(i, p) for p, n in PAGES.items() for i in range(sum(list(PAGES.values())[:p]),
                                                                sum(list(PAGES.values())[:p]) + n)]
    deliveries = tiles * 3  # every tile delivered three times, in random order, by 8 threads
    random.Random(0).shuffle(deliveries)
    fired_pages: list[int] = []
    fired_runs: list[int] = []
    lock = threading.Lock()

    def worker(chunk: list[tuple[int, int]]) -> None:
        mine = RunProgress(_client(redis_server), progress.run_id)
        for i, p in chunk:
            f = mine.mark(i, p)
            with lock:
                if f.page:
                    fired_pages.append(p)
                if f.run:
                    fired_runs.append(i)

    threads = [threading.Thread(target=worker, args=(deliveries[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fired_pages) == sorted(PAGES)  # each page exactly once
    assert len(fired_runs) == 1
    snap = progress.snapshot()
    assert snap is not None and snap.done == len(tiles) and snap.finished
    assert snap.duplicates == 2 * len(tiles)
    progress.clear()
    assert progress.snapshot() is None and not client.keys(f"*{progress.run_id}*")


def test_seal_after_everything_is_counted_fires_once(redis_server: RedisServer) -> None:
    progress = RunProgress(_client(redis_server), f"h-{uuid.uuid4().hex[:12]}")
    progress.start()
    fired = progress.mark_many([(0, None), (1, None), (1, None)])
    assert not any(f.run for f in fired)  # no total yet: nothing can complete the run
    assert progress.seal(2) is True and progress.seal(2) is False
    assert progress.marked(3) == [True, True, False]


def test_stalled_means_no_new_outcome_for_a_while(redis_server: RedisServer) -> None:
    progress = RunProgress(_client(redis_server), f"h-{uuid.uuid4().hex[:12]}")
    progress.start(now=1000.0)
    progress.seal(3, now=1000.0)
    progress.mark(0, now=1010.0)
    snap = progress.snapshot()
    assert snap is not None
    assert not snap.stalled(1013.0, after=5) and snap.stalled(1016.0, after=5)
    progress.mark(1, now=1020.0)
    progress.mark(2, now=1021.0)
    done = progress.snapshot()
    assert done is not None and not done.stalled(5000.0, after=5)  # complete: nothing to heal


def test_each_fruitless_heal_doubles_the_wait(redis_server: RedisServer) -> None:
    progress = RunProgress(_client(redis_server), f"h-{uuid.uuid4().hex[:12]}")
    progress.start(now=0.0 + 1)
    progress.seal(2, now=1.0)
    progress.healed(now=11.0)
    snap = progress.snapshot()
    assert snap is not None and snap.heals == 1
    assert not snap.stalled(11.0 + 15, after=10) and snap.stalled(11.0 + 20, after=10)
    progress.mark(0, now=40.0)  # an outcome: back to the plain wait
    snap = progress.snapshot()
    assert snap is not None and snap.heals == 0 and snap.stalled(50.0, after=10)


def test_outcomes_are_stamped_with_the_redis_clock(redis_server: RedisServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A process whose clock is off by 20 minutes stamps its outcomes with Redis's time, so
    the healer (which reads the same clock) sees neither a false stall nor a hidden one."""
    progress = RunProgress(_client(redis_server), f"h-{uuid.uuid4().hex[:12]}")
    monkeypatch.setattr(time, "time", lambda: _real_time() + 20 * 60)  # this process, skewed
    before = progress.now()
    progress.start()
    progress.seal(2)
    progress.mark(0)
    progress.mark_many([(1, None)])
    after = progress.now()
    snap = progress.snapshot()
    assert snap is not None and before <= snap.last <= after
    assert abs(after - _real_time()) < 60  # the server's clock, not this process's
