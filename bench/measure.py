"""What every benchmark measures with, written once: progress lines, medians, side-by-side
timing, CPU seconds and memory from ``/proc``, the worker log's batch lines, the machine's
description, a plain text table, the raw JSON dump and the one RESULTS block a benchmark may
rewrite (its table; the reading of the figures is written by hand in ``bench/RESULTS*.md``).

TensorFlow is imported only by the helpers that time it (``matmul_peak``, ``conv_flops``,
``machine_lines``), so the fleet benchmarks load nothing heavy through this module.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RAW = BENCH / "raw"
CLK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()


def say(msg: str) -> None:
    """A progress line on stderr with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def median(xs: Iterable[float]) -> float:
    """The median; NaN for no values (a section that did not run)."""
    vals = [float(x) for x in xs]
    return float(statistics.median(vals)) if vals else float("nan")


def interleaved(tasks: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Run every task once per repeat, rotating the order, so load from other work on the
    shared cores hits all alike; seconds per run (or the float a task returns itself)."""
    names = list(tasks)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            value = tasks[n]()
            dt = time.perf_counter() - t0
            out[n].append(float(value) if isinstance(value, float) else dt)
    return out


# --- /proc ----------------------------------------------------------------------------------------


def process_cpu(pid: int | None, waited_children: bool = False) -> float:
    """utime + stime (+ cutime + cstime) of one process, all its threads, in seconds; 0 when
    it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if waited_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo.extend(_children(p))
    return seen


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """CPU seconds of ``pid`` and, with ``tree``, of its descendants (living and waited for)."""
    if not tree:
        return process_cpu(pid)
    return sum(process_cpu(p, True) for p in _tree(pid))


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (a CLI run in a subprocess)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores, /proc/stat)."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / CLK


def status_mb(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in MiB; 0 when unreadable."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM of ``pid`` to its current RSS (Linux ≥ 4.0: ``clear_refs`` value 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Meter:
    """CPU seconds of named processes (``self`` alone, the others with their descendants), of
    the whole machine and wall time over one measured run; ``others`` = the machine's busy
    seconds minus the named processes': what other work took meanwhile."""

    def __init__(self, procs: dict[str, int]) -> None:
        self.procs = procs

    def snap(self) -> dict[str, float]:
        s = {name: cpu_seconds(pid, tree=name != "self") for name, pid in self.procs.items()}
        s["machine"] = machine_busy()
        s["wall"] = time.perf_counter()
        return s

    def diff(self, a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        d = {k: b[k] - a[k] for k in a}
        d["others"] = d["machine"] - sum(d[k] for k in self.procs)
        return d


# --- the worker log -------------------------------------------------------------------------------

_BATCH = re.compile(
    r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): [A-Z]+/[^\]]*\].*?batch of (\d+) jobs "
    r"\(([^)]*)\): model ([\d.]+) s, waited ([\d.]+) s for input; queued (\d+)"
)


def parse_batches(text: str) -> list[dict[str, Any]]:
    """The batcher's log lines: end time (epoch s), jobs, job kinds, model and input-wait
    seconds, jobs still queued."""
    out = []
    for m in _BATCH.finditer(text):
        ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append({"end": ts, "n": int(m.group(2)), "kinds": m.group(3),
                    "model": float(m.group(4)), "waited": float(m.group(5)),
                    "queued": int(m.group(6))})
    return out


# --- the machine ----------------------------------------------------------------------------------


def cpu_fields() -> dict[str, str]:
    """The first processor's ``/proc/cpuinfo`` fields (model name, family, flags …)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    return cpu_fields().get("model name") or platform.processor() or "unknown"


def mem_total_gb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def git_commit() -> str:
    """The checked-out commit, marked when the working tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True).stdout.strip()
        return head + (" + uncommitted changes in the working tree" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """Where and when a run happened, for its raw JSON."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPU cores ({cpu_model()}), {mem_total_gb():.0f} GB RAM",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": git_commit(),
        "command": " ".join(["bench/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
        "load_start": os.getloadavg()[0],
    }


def machine_lines() -> list[str]:
    """The machine, library versions and TensorFlow's threads, as the engine benchmarks print
    them above their tables."""
    import keras
    import numpy as np
    import tensorflow as tf

    fields = cpu_fields()
    cpu = (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
           f"model {fields.get('model', '?')})")
    have = set(fields.get("flags", "").split())
    flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in have)
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__,
                "keras": keras.__version__, "numpy": np.__version__}
    try:
        from importlib.metadata import version

        versions["tf-keras-vis"] = version("tf-keras-vis")
    except Exception:  # noqa: BLE001
        versions["tf-keras-vis"] = "not installed"
    threads = tf.config.threading
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: nproc={os.cpu_count()}, CPU {cpu}, flags: {flags}; {platform.platform()}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"TF threads: intra-op {threads.get_intra_op_parallelism_threads() or 'default'}, "
        f"inter-op {threads.get_inter_op_parallelism_threads() or 'default'}; "
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (on)')}",
    ]


# --- TensorFlow meters ----------------------------------------------------------------------------


def matmul_peak(n: int, tries: int) -> Callable[[], float]:
    """GFLOP/s of a compiled float32 n×n matmul, best of ``tries`` (the machine's reachable
    peak), as a task for ``interleaved``."""
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)

    @tf.function
    def mm(a: Any, b: Any) -> Any:
        return tf.linalg.matmul(a, b)[0, 0]

    mm(a, b).numpy()

    def run() -> float:
        best = float("inf")
        for _ in range(tries):
            t0 = time.perf_counter()
            mm(a, b).numpy()
            best = min(best, time.perf_counter() - t0)
        return 2.0 * n**3 / best / 1e9

    return run


def conv_flops(model: Any, upto: str | None, size: int) -> float:
    """Forward FLOPs for one image: Σ over Conv2D/Dense layers of 2·MACs, up to ``upto`` included.

    Conv2D: 2·kh·kw·Cin·Cout·Hout·Wout; Dense: 2·in·out. Bias, ReLU and pooling are not counted.
    """
    shape: Any = (1, size, size, 3)
    total = 0.0
    for layer in model.layers[1:]:
        out = layer.compute_output_shape(shape)
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            total += 2.0 * kh * kw * cin * cout * out[1] * out[2]
        elif kind == "Dense":
            total += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
        shape = out
        if layer.name == upto:
            break
    return total


# --- output ---------------------------------------------------------------------------------------


class Log:
    """Prints each line and keeps it, for the block a benchmark writes into its RESULTS file."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))


def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table: columns padded to their widest cell, floats as given by the caller."""
    cells = [[str(c) for c in head], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def raw_path(name: str, quick: bool, given: Path | None = None) -> Path:
    """Where a run's raw JSON goes: ``given``; else ``bench/raw/<name>.json`` for a full run
    (the record beside RESULTS) and the temp folder for a quick one (it records nothing)."""
    if given is not None:
        return given
    if quick:
        return Path(tempfile.gettempdir()) / "convatlas-bench-raw" / f"{name}-quick.json"
    return RAW / f"{name}.json"


def dump_raw(path: Path, data: Any) -> Path:
    """Write a run's raw measurements as JSON (atomically: a killed run leaves the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    say(f"raw measurements in {path}")
    return path


def write_section(results: Path, name: str, lines: list[str]) -> None:
    """Replace the ``<!-- bench:NAME:start/end -->`` block of ``results`` with ``lines`` as a
    text block (appended when absent); the hand-written text around it stays as it is."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = "\n".join([start, "```text", *lines, "```", end])
    text = results.read_text() if results.exists() else f"# {results.stem}\n"
    if start in text and end in text:
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    results.write_text(text)
    say(f"wrote the {name} block of {results}")
