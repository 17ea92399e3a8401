"""What every part of the GPU measurement shares: its sizes (full or smoke), its output file,
and a median timer that waits for the device.

A part runs in a process of its own (``h200.py --part NAME``) and writes its rows to
``OUT/part-NAME.json`` after each one, so a part stopped by its time box keeps what it measured.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for _path in (REPO, REPO / "bench"):  # convatlas, and bench/measure.py (conv_flops)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@dataclass(frozen=True)
class Sizes:
    """The measurement's sizes: the H200's, or the CPU smoke run's (same code, tiny work)."""

    smoke: bool
    matmul_n: int
    ascent_layers: tuple[str, ...]
    ascent_size: int  # the book's 64 px
    ascent_steps: int  # the book's 40
    ascent_batches: tuple[int | None, ...]  # None: the whole layer
    cam_batches: tuple[int, ...]
    photos: int  # 2-MP JPEGs through the worker
    photo_side: tuple[int, int]  # width, height (1632 x 1224 = 2.0 MP)
    grid_layers: str  # the overnight job: every layer ...
    grid_filters: str  # ... every filter
    grid_size: int
    grid_steps: int
    max_batch: int  # CONVATLAS_MAX_BATCH of the GPU worker
    budgets: dict[str, float] = field(default_factory=dict)  # seconds per part


FULL = Sizes(
    smoke=False, matmul_n=8192,
    ascent_layers=("block5_conv1", "block3_conv1", "block1_conv1"), ascent_size=64,
    ascent_steps=40, ascent_batches=(None, 64), cam_batches=(64, 256, 1024),
    photos=2000, photo_side=(1632, 1224), grid_layers="all", grid_filters="all",
    grid_size=64, grid_steps=40, max_batch=512,
    budgets={"prep": 40, "peak": 30, "engine": 110, "cams": 80, "codec": 20,
             "overnight": 120, "photos": 60},
)
SMOKE = Sizes(
    smoke=True, matmul_n=256,
    ascent_layers=("block2_conv1", "block1_conv1"), ascent_size=16, ascent_steps=3,
    ascent_batches=(None, 4), cam_batches=(2,), photos=6, photo_side=(640, 480),
    grid_layers="block1_conv1,block2_conv1", grid_filters="0:4", grid_size=16, grid_steps=2,
    max_batch=8,
    budgets={"prep": 120, "peak": 60, "engine": 240, "cams": 240, "codec": 60,
             "overnight": 240, "photos": 240},
)


def sizes(smoke: bool) -> Sizes:
    return SMOKE if smoke else FULL


class PartLog:
    """The rows of one part, rewritten to ``OUT/part-NAME.json`` after each addition. A row
    with an ``error`` (or failed jobs) marks the part failed: its process exits 1."""

    failed = False  # any part log of this process had an error row

    def __init__(self, out: Path, name: str) -> None:
        self.path = out / f"part-{name}.json"
        self.data: dict[str, Any] = {"part": name, "rows": [], "notes": []}

    def set(self, **items: Any) -> None:
        self.data.update(items)
        self._write()

    def row(self, **items: Any) -> None:
        if items.get("error") or items.get("failed_jobs"):
            PartLog.failed = True
        self.data["rows"].append(items)
        print(f"[{self.data['part']}] " + ", ".join(f"{k}={_short(v)}" for k, v in items.items()),
              flush=True)
        self._write()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        print(f"[{self.data['part']}] note: {text}", flush=True)
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def median_seconds(fn: Callable[[], Any], sync: Callable[[Any], Any], *, warmup: int = 1,
                   reps: int = 5, max_seconds: float = 10.0) -> tuple[float, int]:
    """Median wall time of ``fn()`` (``sync`` waits for its device work), after ``warmup`` calls;
    at most ``reps`` timed calls, fewer when they pass ``max_seconds``. Returns (median, n)."""
    for _ in range(warmup):
        sync(fn())
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def out_dir() -> Path:
    return Path(os.environ["CONVATLAS_GPU_OUT"])


def read_part(out: Path, name: str) -> dict[str, Any]:
    path = out / f"part-{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
