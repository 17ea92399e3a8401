"""A wall clock ahead by what a file says, for a worker of the clock-skew fault test.

A Python started with this folder on ``PYTHONPATH`` loads this module first. Its wall clock
(``time.time``, ``time.time_ns``, ``datetime.datetime.now``/``utcnow``: what Celery, kombu and
botocore's request signatures read) runs ahead by the seconds written in the file named by
``CONVATLAS_TEST_CLOCK_SKEW_FILE`` (read at most every 0.2 s, so a test can move the clock
mid-run). The monotonic clock is left alone, as on a machine whose NTP is off.

Not libfaketime: Debian 12's 0.9.10 cannot skew a Python with threads. With the monotonic
clock left real (``FAKETIME_DONT_FAKE_MONOTONIC=1``) ``time.sleep`` fails with EINVAL; with
it faked, every wait with a timeout (``threading.Event.wait(1)``) sleeps the whole offset.
"""

from __future__ import annotations

import datetime as _datetime
import os
import time as _time

_FILE = os.environ.get("CONVATLAS_TEST_CLOCK_SKEW_FILE", "")
_real_time, _real_time_ns, _real_monotonic = _time.time, _time.time_ns, _time.monotonic
_cache = [0.0, -1.0]  # [skew, when it was read (monotonic)]


def _skew() -> float:
    now = _real_monotonic()
    if now - _cache[1] > 0.2:
        try:
            with open(_FILE) as f:
                _cache[0] = float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
        _cache[1] = now
    return _cache[0]


def _time_skewed() -> float:
    return _real_time() + _skew()


def _time_ns_skewed() -> int:
    return _real_time_ns() + int(_skew() * 1e9)


class _SkewedDatetime(_datetime.datetime):
    @classmethod
    def now(cls, tz: _datetime.tzinfo | None = None) -> _SkewedDatetime:  # type: ignore[override]
        return cls.fromtimestamp(_time_skewed(), tz)

    @classmethod
    def utcnow(cls) -> _SkewedDatetime:  # type: ignore[override]
        return cls.fromtimestamp(_time_skewed(), _datetime.timezone.utc).replace(tzinfo=None)

    @classmethod
    def today(cls) -> _SkewedDatetime:  # type: ignore[override]
        return cls.fromtimestamp(_time_skewed())


if _FILE:
    _time.time, _time.time_ns = _time_skewed, _time_ns_skewed
    _datetime.datetime = _SkewedDatetime  # type: ignore[misc]
