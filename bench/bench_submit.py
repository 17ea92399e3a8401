#!/usr/bin/env python
"""Benchmark: ``convatlas submit heatmaps`` on folders of 1 000 to 100 000 photos (issue 11).

    .venv/bin/python bench/bench_submit.py            # 1k, 20k, 100k; old producer at 1k, 20k
    .venv/bin/python bench/bench_submit.py --quick    # 1k and 5k only; no write

Tiny distinct PNGs (8×8, a few hundred bytes each), so what is measured is the producer itself:
walking, hashing, uploading to a real SeaweedFS, writing the manifest and queueing to a real
Redis (no worker runs: the tasks stay queued, and the database is flushed after each size).
Each submission is the real CLI in its own process; its peak RSS is ``ru_maxrss`` from
``wait4``. Beside it, the producer of commit ``OLD_REV`` (one manifest document, every job in
memory) on the same folders, from a ``git worktree``: the ratio is measured in one run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = Path(__file__).resolve().parent / "RESULTS-submit.md"
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
    ap.add_argument("--quick", action="store_true")
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
    if args.quick:
        return
    write_results(rows, time.time() - t_start)


def write_results(rows: list[tuple[str, int, float, int, str]], seconds: float) -> None:
    by = {(name, n): (wall, kib) for name, n, wall, kib, _ in rows}
    sizes = sorted({n for _, n, *_ in rows})
    load = os.getloadavg()[0]
    lines = [
        "# Submission benchmark: `convatlas submit heatmaps` on 1 000 – 100 000 photos",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"`bench/bench_submit.py` ({seconds / 60:.1f} min; load average {load:.1f} at the end: "
        "the cores were shared with other work, so rates are for context).",
        "",
        "Tiny distinct 8×8 PNGs; a real SeaweedFS and Redis on loopback; no worker (tasks stay "
        "queued). Peak RSS is the CLI process's `ru_maxrss`. *old* is the producer of commit "
        f"`{OLD_REV}` (one manifest document, every job and input in memory), run on the same "
        "folders in the same run.",
        "",
        "| Photos | Streaming: wall s | photos/s | peak RSS MiB | Old: wall s | photos/s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        s = by[("streaming", n)]
        o = by.get(("old", n))
        old_cells = (f"{o[0]:.1f} | {n / o[0]:.0f} | {o[1] / 1024:.1f}" if o else "– | – | –")
        lines.append(f"| {n:,} | {s[0]:.1f} | {n / s[0]:.0f} | {s[1] / 1024:.1f} | {old_cells} |")
    lo, hi = sizes[0], sizes[-1]
    grow = (by[("streaming", hi)][1] - by[("streaming", lo)][1]) / 1024
    lines += [
        "",
        f"- Streaming producer, {lo:,} → {hi:,} photos: peak RSS {grow:+.1f} MiB "
        f"({grow * 1024 * 1024 / (hi - lo):.0f} bytes a photo: the set of digests seen, for "
        f"de-duplication). Target ≤ 150 MiB at 100 000: "
        f"**{'met' if by[('streaming', hi)][1] / 1024 <= 150 else 'not met'}** "
        f"({by[('streaming', hi)][1] / 1024:.1f} MiB).",
    ]
    old_hi = max(n for (name, n) in by if name == "old")
    og = (by[("old", old_hi)][1] - by[("old", lo)][1]) / 1024
    lines.append(
        f"- Old producer, {lo:,} → {old_hi:,} photos: {og:+.1f} MiB "
        f"({og * 1024 / (old_hi - lo):.1f} KiB a photo); at {old_hi:,} photos the streaming one "
        f"needs {by[('streaming', old_hi)][1] / by[('old', old_hi)][1]:.2f}× its peak RSS, at "
        f"{by[('old', old_hi)][0] / by[('streaming', old_hi)][0]:.2f}× its speed.")
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
