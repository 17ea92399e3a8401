#!/usr/bin/env python
"""Benchmark: ``convatlas submit heatmaps`` on folders of 1 000 to 100 000 photos (issue 11).

    .venv/bin/python bench/bench_submit.py            # 1k, 20k, 100k; old producer at 1k, 20k
    .venv/bin/python bench/bench_submit.py --quick    # 1k and 5k only: smoke check

Tiny distinct PNGs (8×8, a few hundred bytes each), so what is measured is the producer itself:
walking, hashing, uploading to a real SeaweedFS, writing the manifest and queueing to a real
Redis (no worker runs: the tasks stay queued, and the database is flushed after each size).
Each submission is the real CLI in its own process; its peak RSS is ``ru_maxrss`` from
``wait4``. Beside it, the producer of commit ``OLD_REV`` (one manifest document, every job in
memory) on the same folders, from a ``git worktree``: the ratio is measured in one run.
It prints a table and writes the raw measurements (``bench/raw/submit.json``, a quick run's in
the temp folder); the reading is written by hand in ``RESULTS-submit.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import REPO, dump_raw, machine_info, raw_path, table

sys.path.insert(0, str(REPO))
OLD_REV = "20a80c9"  # the last producer before streaming


def submit(env: dict[str, str], folder: Path, code: Path, logs: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS KiB, stdout) of one ``submit heatmaps`` run of the code at ``code``."""
    env = {**env, "PYTHONPATH": str(code)}
    out_p, err_p = logs / "out.txt", logs / "err.txt"
    t0 = time.perf_counter()
    with out_p.open("wb") as out, err_p.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "convatlas.producer.cli", "submit", "heatmaps", str(folder)],
            env=env, cwd=code, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(out_p.read_text() + err_p.read_text())
    return wall, usage.ru_maxrss, out_p.read_text().strip().splitlines()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1k and 5k photos: smoke check")
    args = ap.parse_args()
    sizes = [1_000, 5_000] if args.quick else [1_000, 20_000, 100_000]
    old_sizes = sizes[:2]

    import redis

    from convatlas.stack.harness import fleet_env, tiny_photo_folder
    from convatlas.stack.servers import RedisServer, SeaweedS3Server

    tmp = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    old = tmp / "old"
    subprocess.run(["git", "worktree", "add", "--detach", str(old), OLD_REV], cwd=REPO,
                   check=True, capture_output=True)
    rs, s3 = RedisServer(tmp / "redis"), SeaweedS3Server(tmp / "s3")
    rs.start()
    s3.start()
    rows: list[tuple[str, int, float, int, str]] = []
    t_start = time.time()
    try:
        env = fleet_env(rs, s3, "bench-submit", tmp / "cache", db=0)
        client = redis.Redis.from_url(env["CONVATLAS_BROKER_URL"])
        for n in sizes:
            folder = tiny_photo_folder(tmp / f"photos-{n}", n, n)
            for name, code in (("streaming", REPO), ("old", old)):
                if name == "old" and n not in old_sizes:
                    continue
                # each side on its own prefix: both upload every photo and queue every job
                side_env = {**env, "CONVATLAS_S3_PREFIX": f"bench-{name}-{n}"}
                wall, kib, line = submit(side_env, folder, code, tmp)
                queued = client.llen("convatlas")
                client.flushdb()
                rows.append((name, n, wall, kib, line))
                print(f"{name:9s} {n:>7d} photos: {wall:7.1f} s  {n / wall:6.0f} photos/s  "
                      f"peak RSS {kib / 1024:6.1f} MiB  queued {queued}  | {line}", flush=True)
    finally:
        s3.stop()
        rs.stop()
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO,
                       capture_output=True)
    dump_raw(raw_path("submit", args.quick), {
        **machine_info(), "minutes": (time.time() - t_start) / 60, "old_rev": OLD_REV,
        "runs": [{"producer": name, "photos": n, "wall": wall, "peak_kib": kib, "line": line}
                 for name, n, wall, kib, line in rows]})
    print(report(rows))


def report(rows: list[tuple[str, int, float, int, str]]) -> str:
    """Each producer's wall time, rate and peak RSS per folder size, side by side."""
    by = {(name, n): (wall, kib) for name, n, wall, kib, _ in rows}
    out = []
    for n in sorted({n for _, n, *_ in rows}):
        cells: list[object] = [n]
        for name in ("streaming", "old"):
            w = by.get((name, n))
            cells += [f"{w[0]:.1f}", f"{n / w[0]:.0f}", f"{w[1] / 1024:.1f}"] if w else ["-"] * 3
        out.append(cells)
    hi = max(n for name, n in by if name == "streaming")
    peak = by[("streaming", hi)][1] / 1024
    return (table(("photos", "streaming wall s", "photos/s", "peak RSS MiB",
                   f"old ({OLD_REV}) wall s", "photos/s", "peak RSS MiB"), out)
            + f"\n\nstreaming peak RSS at {hi} photos: {peak:.1f} MiB (target <= 150 MiB at "
            f"100 000: {'met' if peak <= 150 else 'NOT MET'})")


if __name__ == "__main__":
    main()
