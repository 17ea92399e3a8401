"""Run progress in Redis: which jobs of a run have an outcome, counted exactly once.

A run's state is a few keys, whatever its size: a bitmap with one bit per job of the manifest
(set when the job has an outcome: done, or failed for good), a hash of counters (``done``,
``total`` once the producer has sent everything, ``last`` = time of the last new outcome,
``duplicates`` = outcomes reported again, ``requeued`` = jobs the healer queued again) and, for
grid runs, per-page counters. Marking is one Lua script, so a redelivered or duplicated job
never counts twice, a page's reducer is fired by exactly one marker (the one that completes the
page), and the run's report by exactly one (the one that completes the run). Keys expire after
``TTL`` seconds and are deleted when the run's report is written: nothing stays behind.

Every time here is the Redis server's clock (``TIME``), never a worker's: a worker whose clock
is off by minutes neither makes a run look stalled to the healer nor hides a stall from it.

Storage stays the record of truth: this state is a fast index over it, and the healer
(``convatlas.workers.healer``) rebuilds it from storage when Redis lost it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

TTL = 7 * 24 * 3600

# the caller's ``now`` (tests), else the server's clock, as "seconds.micro"
_NOW_OR_TIME = """
if now == '' then local t = redis.call('TIME'); now = t[1] .. '.' .. string.format('%06d', t[2]) end
"""

_MARK = """
local bits, state, pages, totals = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local idx, page, now, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
""" + _NOW_OR_TIME + """
if redis.call('SETBIT', bits, idx, 1) == 1 then
  redis.call('HINCRBY', state, 'duplicates', 1)
  return {0, 0}
end
local done = redis.call('HINCRBY', state, 'done', 1)
redis.call('HSET', state, 'last', now, 'heals', 0)
local fire_page = 0
if page >= 0 then
  local pd = redis.call('HINCRBY', pages, page, 1)
  local pt = tonumber(redis.call('HGET', totals, page) or '-1')
  if pd == pt then fire_page = 1 end
end
local total = tonumber(redis.call('HGET', state, 'total') or '-1')
local fire_run = 0
if done == total and redis.call('HSETNX', state, 'fired', 1) == 1 then fire_run = 1 end
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ttl) end
return {fire_page, fire_run}
"""

_SEAL = """
local state, now = KEYS[1], ARGV[2]
""" + _NOW_OR_TIME + """
redis.call('HSET', state, 'total', ARGV[1])
redis.call('HSETNX', state, 'last', now)
redis.call('EXPIRE', state, tonumber(ARGV[3]))
local done = tonumber(redis.call('HGET', state, 'done') or '0')
if done == tonumber(ARGV[1]) and redis.call('HSETNX', state, 'fired', 1) == 1 then return 1 end
return 0
"""


@dataclass(frozen=True)
class Fired:
    """What one marker completed: its page (to reduce) and/or its run (to report)."""

    page: bool
    run: bool


@dataclass(frozen=True)
class Snapshot:
    done: int
    total: int | None  # None until the producer has sent the whole run
    last: float
    duplicates: int
    requeued: int
    finished: bool
    heals: int = 0  # healing rounds since the last new outcome

    def stalled(self, now: float, after: float) -> bool:
        """No new outcome for ``after`` seconds while outcomes are missing; the wait doubles
        with each healing round that brought no outcome (up to 64×), so jobs that are only
        slow are not queued again and again."""
        missing = self.total is None or self.done < self.total
        wait = after * 2 ** min(self.heals, 6)
        return missing and not self.finished and now - self.last >= wait


class RunProgress:
    """The progress keys of one run in a Redis database (``redis.Redis`` client)."""

    def __init__(self, client: Any, run_id: str, prefix: str = "convatlas:run") -> None:
        self.client = client
        self.run_id = run_id
        p = f"{prefix}:{run_id}"
        self.bits, self.state, self.pages, self.totals = (
            f"{p}:bits", f"{p}:state", f"{p}:pages", f"{p}:pagetotal")
        self._mark = client.register_script(_MARK)
        self._seal = client.register_script(_SEAL)

    @property
    def keys(self) -> list[str]:
        return [self.bits, self.state, self.pages, self.totals]

    def now(self) -> float:
        """The Redis server's clock (the one every process here shares)."""
        sec, usec = self.client.time()
        return float(sec) + usec / 1e6

    def start(self, page_totals: dict[int, int] | None = None, now: float | None = None) -> None:
        """A fresh state (a re-submission starts counting again from storage)."""
        pipe = self.client.pipeline()
        pipe.delete(*self.keys)
        pipe.hset(self.state, mapping={"done": 0, "last": now or self.now()})
        if page_totals:
            pipe.hset(self.totals, mapping={str(k): v for k, v in page_totals.items()})
        for k in self.keys:
            pipe.expire(k, TTL)
        pipe.execute()

    def mark(self, index: int, page: int | None = None, now: float | None = None) -> Fired:
        fp, fr = self._mark(keys=self.keys, args=[index, -1 if page is None else page,
                                                  now or "", TTL])
        return Fired(bool(fp), bool(fr))

    def mark_many(self, items: Iterable[tuple[int, int | None]]) -> list[Fired]:
        """Several marks in one round trip (the producer's already-done jobs)."""
        pipe = self.client.pipeline()
        n = 0
        for index, page in items:
            self._mark(keys=self.keys, args=[index, -1 if page is None else page, "", TTL],
                       client=pipe)
            n += 1
        return [Fired(bool(a), bool(b)) for a, b in pipe.execute()] if n else []

    def seal(self, total: int, now: float | None = None) -> bool:
        """Everything is sent: the run has ``total`` jobs. True if it is already complete (the
        caller then writes the report: no marker will)."""
        return bool(self._seal(keys=[self.state], args=[total, now or "", TTL]))

    def has(self, index: int) -> bool:
        return bool(self.client.getbit(self.bits, index))

    def marked(self, n: int) -> list[bool]:
        """Which of the first ``n`` jobs have a counted outcome."""
        raw = self.client.get(self.bits) or b""
        return [bool(raw[i >> 3] & (0x80 >> (i & 7))) if (i >> 3) < len(raw) else False
                for i in range(n)]

    def touch(self, now: float | None = None) -> None:
        self.client.hset(self.state, "last", now or self.now())

    def add_requeued(self, n: int) -> None:
        self.client.hincrby(self.state, "requeued", n)

    def healed(self, now: float | None = None) -> None:
        """A healing round happened: restart the clock, and double the next wait."""
        pipe = self.client.pipeline()
        pipe.hset(self.state, "last", now or self.now())
        pipe.hincrby(self.state, "heals", 1)
        pipe.execute()

    def snapshot(self) -> Snapshot | None:
        """The counters, or None when Redis has no state for this run."""
        raw = {k.decode() if isinstance(k, bytes) else k: v
               for k, v in self.client.hgetall(self.state).items()}
        if not raw:
            return None
        return Snapshot(
            done=int(raw.get("done", 0)),
            total=int(raw["total"]) if "total" in raw else None,
            last=float(raw.get("last", 0)),
            duplicates=int(raw.get("duplicates", 0)),
            requeued=int(raw.get("requeued", 0)),
            finished=bool(raw.get("fired")),
            heals=int(raw.get("heals", 0)),
        )

    def clear(self) -> None:
        self.client.delete(*self.keys)


def progress_client(settings: Any) -> Any:
    """A Redis client for run progress: ``CONVATLAS_PROGRESS_URL``, else the result backend or
    the broker, whichever is Redis; None when neither is (then runs are followed by listing)."""
    import redis

    for url in (settings.progress_url, settings.result_backend, settings.broker_url):
        if url and url.startswith(("redis://", "rediss://", "unix://")):
            tls = {"ssl_ca_certs": settings.tls_ca} if (
                url.startswith("rediss://") and getattr(settings, "tls_ca", "")) else {}
            return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10,
                                        health_check_interval=30, **tls)
    return None
