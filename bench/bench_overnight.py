#!/usr/bin/env python
"""Benchmark: the overnight job (every filter of every vgg16-hed layer) on a fleet of 2 workers
vs in-process, and a 4224-job run with 3 worker ``kill -9``s (issue 11).

    .venv/bin/python bench/bench_overnight.py            # writes bench/RESULTS-overnight.md
    .venv/bin/python bench/bench_overnight.py --quick    # 2 layers, 1 kill; no write
    .venv/bin/python bench/bench_overnight.py --crashes-only   # part B alone; rewrites its section
    .venv/bin/python bench/bench_overnight.py --whole    # A2: the whole job, both sides (~3 h)
    .venv/bin/python bench/bench_overnight.py --split    # A3: half of every layer each (~1.5 h)

A. **Book settings** (40 steps, 64 px): page 0 (filters 0:64) of each of the 13 conv layers,
   832 filters, as ``convatlas grids`` would compute them: in-process (``run_local``) and on the
   fleet (2 ``convatlas worker`` processes, each with ``CONVATLAS_TF_THREADS`` = cores / 2, on
   a real Redis and SeaweedFS; ``submit_plan`` then
   the report written by the run's ``finish`` task). Both sides have their model loaded and
   their compiled functions traced on a warm-up page first. The whole job (66 pages, 4224
   filters) is extrapolated per layer: a layer's page time × its pages, for each side.
A2. **The whole job** (``--whole``): ``--layers all --filters all`` at book settings, one run
   in-process and one submission to the same fleet, each from start to its report; the
   section is rewritten alone.
A3. **The whole job, split** (``--split``): every filter of every layer computed once, side by
   side in one run: the first half of each layer's filters in-process (one ``run_local``), the
   second half on the fleet (one submission). The same shapes and steps on both sides, so the
   two halves are equal work; each side's whole-job wall time is twice its half. Per-layer
   times come from the time stamps of the tiles' outcome markers.
B. **Crashes nobody watches**: all 4224 filters at 16 px and 1 step (the fabric, not the math)
   on 2 workers, undisturbed, then again (new seed: new jobs) with a worker SIGKILLed at 3
   random instants and restarted 2 s later (what a supervisor does), with the visibility
   timeout at an hour and ``CONVATLAS_REQUEUE_AFTER`` at 30 s (A: the default 300 s): the healer
   alone must finish it. Outcomes, requeued jobs and duplicates come from the run's report.

The 2 cores are shared by both workers, Redis, SeaweedFS and the producer, as on any 2-core box.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "RESULTS-overnight.md"
MODEL = "vgg16-hed"


def conv_layers() -> list[tuple[str, int]]:
    from convatlas.shared.models.registry import layer_table

    return [(i.name, i.channels) for i in layer_table(MODEL) if i.kind == "Conv2D"]


class Workers:
    """N ``convatlas worker`` processes of one fleet environment."""

    def __init__(self, env: dict[str, str], dir: Path, n: int) -> None:
        self.env, self.dir, self.procs, self.starts = env, dir, [None] * n, 0
        for i in range(n):
            self.start(i)

    def start(self, i: int) -> None:
        from convatlas.stack.harness import start_worker, wait_ready

        self.starts += 1
        log = self.dir / f"worker-{self.starts}.log"
        self.procs[i] = start_worker(self.env, log)  # default threads: 2 x max batch
        wait_ready(self.procs[i], log, timeout=300)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)  # the worker exec'd celery: the same pid, no children
        proc.wait(30)

    def close(self) -> None:
        from convatlas.stack.harness import stop_worker

        for p in self.procs:
            if p is not None:
                stop_worker(p)


def replace_section(name: str, lines: list[str], head: list[str] | None = None) -> None:
    """Put ``## {name}. ...`` (``lines``) in RESULTS in place of its old text, in A, A2, A3, B
    order, keeping the other sections as they are; ``head`` replaces the text above them."""
    order = ["A", "A2", "A3", "B"]
    text = RESULTS.read_text() if RESULTS.exists() else ""
    old_head, *chunks = text.split("\n## ")
    sections = {c.split(".", 1)[0]: "## " + c.rstrip("\n") for c in chunks}
    sections[name] = "\n".join(lines).rstrip("\n")
    body = [sections[k] for k in order if k in sections]
    top = "\n".join(head) if head is not None else old_head
    RESULTS.write_text(top.rstrip("\n") + "\n\n" + "\n\n".join(body) + "\n")
    print(f"rewrote part {name} of {RESULTS}")


def wait_report(storage: Any, run_id: str, timeout: float = 7200) -> dict[str, Any]:
    """Poll the report object (one HEAD every 0.2 s): no listing load on the measured cores."""
    import json

    from convatlas.shared.report import report_key

    deadline = time.monotonic() + timeout
    while not storage.exists(report_key(run_id)):
        if time.monotonic() > deadline:
            raise TimeoutError(run_id)
        time.sleep(0.2)
    return json.loads(storage.get_bytes(report_key(run_id)))


def fleet_setup(redis: Any, s3: Any, tmp: Path) -> tuple[dict[str, str], Any, Any, Any]:
    """The fleet's environment, settings, storage and Celery app, as parts A, A2 and B use them."""
    from convatlas.stack.harness import fleet_env, s3_storage, settings_from
    from convatlas.workers.config import make_app

    env = fleet_env(redis, s3, "overnight", tmp / "cache", visibility_timeout=3600)
    # 2 workers on these cores: each its share of them, as the README says to set it
    # (A runs with the default CONVATLAS_REQUEUE_AFTER, 300 s: a block5 batch takes over
    # a minute here, and a shorter one would queue working jobs again; B with 30 s)
    env.update(CONVATLAS_BATCH_WINDOW_MS="50",
               CONVATLAS_TF_THREADS=str(max(1, (os.cpu_count() or 2) // 2)))
    env.pop("CONVATLAS_UNACKED_RESTORE_INTERVAL", None)
    settings = settings_from(env)
    return env, settings, s3_storage(s3, settings.s3_prefix), make_app(settings)


def fleet_run(plan: Any, storage: Any, app: Any, settings: Any) -> tuple[float, dict[str, Any]]:
    from convatlas.producer.submit import submit_plan

    t0 = time.perf_counter()
    submit_plan(plan, storage, app, settings)
    report = wait_report(storage, plan.run_id)
    return time.perf_counter() - t0, report


def local_run(plan: Any, out: Path) -> tuple[float, dict[str, Any]]:
    from convatlas.producer.local import run_local

    t0 = time.perf_counter()
    report = run_local(plan, out, progress=False)
    return time.perf_counter() - t0, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--crashes-only", action="store_true",
                    help="run part B only and rewrite only its section of the results")
    ap.add_argument("--whole", action="store_true",
                    help="run the whole job at book settings on both sides (part A2) only")
    ap.add_argument("--smoke", action="store_true",
                    help="with --whole: one layer at 16 px, 1 step, to check the script; no write")
    ap.add_argument("--split", action="store_true",
                    help="the whole job once, half of every layer on each side (part A3) only")
    args = ap.parse_args()
    if args.whole:
        whole_job(args.smoke)
        return
    if args.split:
        split_job(args.smoke)
        return

    from convatlas.producer.plans.grids import plan_grids
    from convatlas.shared.engine.patterns import PatternParams
    from convatlas.stack.servers import RedisServer, SeaweedS3Server

    layers = conv_layers()
    sample = [layers[0], layers[-1]] if args.quick else layers
    tmp = Path(tempfile.mkdtemp(prefix="bench-overnight-"))
    redis, s3 = RedisServer(tmp / "redis"), SeaweedS3Server(tmp / "s3")
    redis.start()
    s3.start()
    t_start = time.time()
    out: dict[str, Any] = {"sample": [], "kills": []}
    try:
        env, settings, storage, app = fleet_setup(redis, s3, tmp)
        workers = Workers(env, tmp, 2)
        try:
            book = PatternParams()
            # warm-up: both sides load vgg16-hed and trace the ascent at 64 px
            warm = plan_grids(MODEL, "block1_conv1", "0:8", PatternParams(seed=99), settings)
            if not args.crashes_only:
                local_run(warm, tmp / "local")
                fleet_run(warm, storage, app, settings)
            for name, channels in [] if args.crashes_only else sample:
                plan = plan_grids(MODEL, name, "0:64", book, settings)
                t_local, _ = local_run(plan, tmp / "local")
                t_fleet, report = fleet_run(plan, storage, app, settings)
                assert report["counts"]["done"] == 64, report["counts"]
                row = {"layer": name, "pages": -(-channels // 64), "local": t_local,
                       "fleet": t_fleet}
                out["sample"].append(row)
                print(f"A {name:14s} local {t_local:7.1f} s  fleet {t_fleet:7.1f} s  "
                      f"ratio {t_local / t_fleet:.2f}", flush=True)

            workers.close()  # B: the healer's delay short, so the kills heal within the run
            env["CONVATLAS_REQUEUE_AFTER"] = "30"
            workers = Workers(env, tmp, 2)
            warm = plan_grids(MODEL, "block1_conv1", "0:8", PatternParams(16, 1, seed=98), settings)
            fleet_run(warm, storage, app, settings)
            tiny = "block1_conv1" if args.quick else "all"
            for kills, seed in ((0, 1), (1 if args.quick else 3, 2)):
                plan = plan_grids(MODEL, tiny, "all", PatternParams(16, 1, seed=seed), settings)
                t0 = time.perf_counter()
                from convatlas.producer.submit import submit_plan

                submit_plan(plan, storage, app, settings)
                if kills:
                    base = out["kills"][0]["wall"]
                    instants = sorted(random.Random(seed).uniform(0.1, 0.7) * base
                                      for _ in range(kills))
                    for at in instants:
                        time.sleep(max(0.0, at - (time.perf_counter() - t0)))
                        victim = random.Random(int(at * 1000)).randrange(2)
                        workers.kill(victim)
                        print(f"B   kill -9 worker {victim} at {time.perf_counter() - t0:.1f} s",
                              flush=True)
                        time.sleep(2)
                        workers.start(victim)
                report = wait_report(storage, plan.run_id)
                wall = time.perf_counter() - t0
                row = {"kills": kills, "jobs": len(plan.jobs), "wall": wall,
                       "done": report["counts"]["done"], "failed": report["counts"]["failed"],
                       "healing": report.get("healing") or {}}
                out["kills"].append(row)
                print(f"B {kills} kills: {row['done']}/{row['jobs']} in {wall:.1f} s, "
                      f"healing {row['healing']}", flush=True)
        finally:
            workers.close()
            app.close()
    finally:
        s3.stop()
        redis.stop()
    if not args.quick:
        write_results(out, time.time() - t_start, layers)


@dataclass
class Sides:
    """One side-by-side run: the plans, each side's wall time and report, and (where asked)
    seconds from each side's start to each layer's last outcome."""

    local_plan: Any
    fleet_plan: Any
    started: datetime.datetime
    load_start: float
    t_local: float
    local_report: dict[str, Any]
    t_fleet: float
    fleet_report: dict[str, Any]
    local_layers: dict[str, float]
    fleet_layers: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.t_local / self.t_fleet


def both_sides(part: str, make_plans: Callable[[Any], tuple[Any, Any]],
               layer_times: bool = False) -> Sides:
    """``make_plans(settings)``'s first plan in-process alone (no workers started yet), then its
    second submitted to a fleet of 2 workers set up as in part A; both sides warmed up first."""
    from convatlas.producer.plans.grids import plan_grids
    from convatlas.shared.engine.patterns import PatternParams
    from convatlas.shared.storage import LocalStorage
    from convatlas.stack.servers import RedisServer, SeaweedS3Server

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-overnight-{part}-"))
    redis, s3 = RedisServer(tmp / "redis"), SeaweedS3Server(tmp / "s3")
    redis.start()
    s3.start()
    load_start = os.getloadavg()[0]
    started = datetime.datetime.now()
    try:
        env, settings, storage, app = fleet_setup(redis, s3, tmp)
        local_plan, fleet_plan = make_plans(settings)
        print(f"{part} {len(local_plan.jobs)} jobs in-process, {len(fleet_plan.jobs)} on the "
              "fleet", flush=True)
        warm = plan_grids(MODEL, "block1_conv1", "0:8", PatternParams(seed=99), settings)
        local_run(warm, tmp / "local")
        w0 = time.time()
        t_local, local_report = local_run(local_plan, tmp / "local")
        local_layers = (layer_finish(LocalStorage(tmp / "local"), local_plan, w0)
                        if layer_times else {})
        print(f"{part} in-process {t_local:.0f} s, report {local_report['counts']}", flush=True)
        workers = Workers(env, tmp, 2)
        try:
            fleet_run(warm, storage, app, settings)
            w0 = time.time()
            t_fleet, report = fleet_run(fleet_plan, storage, app, settings)
            fleet_layers = layer_finish(storage, fleet_plan, w0) if layer_times else {}
        finally:
            workers.close()
            app.close()
        print(f"{part} fleet {t_fleet:.0f} s, report {report['counts']}, "
              f"healing {report.get('healing')}", flush=True)
    finally:
        s3.stop()
        redis.stop()
    return Sides(local_plan, fleet_plan, started, load_start, t_local, local_report, t_fleet,
                 report, local_layers, fleet_layers)


def side_rows(s: Sides, halves: bool) -> list[str]:
    """The two sides' table (wall, outcomes, healing) and the verdict; with ``halves`` each
    side's measured half beside its whole job (2 × half)."""

    def wall(t: float) -> str:
        whole = 2 * t if halves else t
        return (f"{t:.0f} s | " if halves else "") + f"{whole:.0f} s ({whole / 3600:.2f} h)"

    local, fleet = s.local_report["counts"], s.fleet_report["counts"]
    healing = s.fleet_report.get("healing") or {}
    return [
        "| Side | " + ("Half (measured) | Whole job (2 × half)" if halves else "Wall")
        + " | Outcomes | Failed | Requeued by the healer | Duplicates |",
        "|---|---|" + ("---|" if halves else "") + "---|---|---|---|",
        f"| In-process | {wall(s.t_local)} | {local['done']} | {local['failed']} | – | – |",
        f"| Fleet, 2 workers | {wall(s.t_fleet)} | {fleet['done']} | {fleet['failed']} | "
        f"{healing.get('requeued', 0)} | {healing.get('duplicates', 0)} |",
        "",
        f"**Fleet vs in-process, the whole job: {s.ratio:.2f}×** (target ≥ 0.9×: "
        f"{'met' if s.ratio >= 0.9 else 'not met'}).",
        "",
    ]


def whole_job(smoke: bool = False) -> None:
    """A2: every filter of every layer at book settings, in-process then on the fleet."""
    from convatlas.producer.plans.grids import plan_grids
    from convatlas.shared.engine.patterns import PatternParams

    def plans(settings: Any) -> tuple[Any, Any]:
        plan = (plan_grids(MODEL, "block1_conv1", "all", PatternParams(16, 1, seed=7), settings)
                if smoke else plan_grids(MODEL, "all", "all", PatternParams(), settings))
        return plan, plan

    s = both_sides("A2", plans)
    if smoke:
        print(f"A2 smoke: ratio {s.ratio:.2f}; nothing written")
        return
    plan = s.local_plan
    replace_section("A2", [
        "## A2. The whole job at book settings, measured",
        "",
        f"Run {s.started:%Y-%m-%d %H:%M}, `bench/bench_overnight.py --whole`: `--layers all "
        f"--filters all`, {len(plan.jobs)} filters, 40 steps, 64 px. In-process (`run_local`, "
        "one run) first, then one submission to a fleet of 2 workers set up as in part A, each "
        f"from start to its last page and report ({len(plan.grids)} pages). Load average "
        f"{s.load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (the two sides "
        "themselves).",
        "",
        *side_rows(s, halves=False),
    ])


def half_plans(settings: Any, smoke: bool) -> tuple[Any, Any]:
    """The whole job as two plans of equal work: each layer's first and second half of filters."""
    from convatlas.producer.plans.grids import plan_grids
    from convatlas.producer.plans.plan import Plan, run_id_of
    from convatlas.shared.engine.patterns import PatternParams

    params = PatternParams(16, 1, seed=7) if smoke else PatternParams()
    layers = conv_layers()[:2] if smoke else conv_layers()
    halves = []
    for spec in ("0:{h}", "{h}:"):
        parts = [plan_grids(MODEL, name, spec.format(h=channels // 2), params, settings)
                 for name, channels in layers]
        jobs = [j for p in parts for j in p.jobs]
        plan = Plan("grids", MODEL, jobs, [g for p in parts for g in p.grids])
        plan.run_id = run_id_of("grids", jobs)
        halves.append(plan)
    return halves[0], halves[1]


def layer_finish(storage: Any, plan: Any, t0: float) -> dict[str, float]:
    """Seconds from ``t0`` (wall clock) to each layer's last outcome marker, in plan order."""
    last: dict[str, float] = {}
    for job in plan.jobs:
        if hasattr(storage, "root"):
            stamp = (storage.root / job.marker).stat().st_mtime
        else:
            head = storage.client.head_object(Bucket=storage.bucket, Key=storage._full(job.marker))
            stamp = head["LastModified"].timestamp()
        last[job.layer] = max(last.get(job.layer, 0.0), stamp - t0)
    return last


LAYER_TABLE_HEAD = [
    "Per layer: seconds from the start of each side's half to the last outcome marker of the "
    "layer, and the layer's own share (from the previous layer's last marker). On the fleet the "
    "layers overlap (a page of the next layer starts while the last one finishes), so the "
    "cumulative columns are the ones to compare; the shares of the block1/block2 layers are "
    "a few seconds either way.",
    "",
    "| Layer | Filters (in-process + fleet) | In-process, to its end | Fleet, to its end | "
    "Fleet vs in-process, to its end | In-process share | Fleet share |",
    "|---|---|---|---|---|---|---|",
]


def layer_rows(local_layers: dict[str, float], fleet_layers: dict[str, float]) -> list[str]:
    """The per-layer table's rows (and one printed line each), in the model's layer order."""
    rows, prev_l, prev_f = [], 0.0, 0.0
    for name, channels in conv_layers():
        if name not in local_layers:
            continue
        cl, cf = local_layers[name], fleet_layers[name]
        dl, df = cl - prev_l, cf - prev_f
        prev_l, prev_f = cl, cf
        rows.append(f"| {name} | {channels // 2} + {channels - channels // 2} | {cl:.0f} s | "
                    f"{cf:.0f} s | {cl / cf if cf else float('nan'):.2f}× | {dl:.0f} s | "
                    f"{df:.0f} s |")
        print(f"A3 {name:14s} in-process {cl:6.0f} s ({dl:+5.0f})  fleet {cf:6.0f} s "
              f"({df:+5.0f})", flush=True)
    return rows


def split_job(smoke: bool = False) -> None:
    """A3: the whole job computed once, half of every layer on each side, in one run."""
    s = both_sides("A3", lambda settings: half_plans(settings, smoke), layer_times=True)
    rows = layer_rows(s.local_layers, s.fleet_layers)
    if smoke:
        print(f"A3 smoke: ratio {s.ratio:.2f}; nothing written")
        return
    replace_section("A3", [
        "## A3. The whole job at book settings, split between the sides in one run",
        "",
        f"Run {s.started:%Y-%m-%d %H:%M}, `bench/bench_overnight.py --split`: every filter of "
        f"every layer at book settings (40 steps, 64 px) computed once: the first half of each "
        f"layer's filters in-process (`run_local`, one run, {len(s.local_plan.jobs)} filters), "
        f"then the second half on the fleet of part A (one submission, "
        f"{len(s.fleet_plan.jobs)} filters), each from start to its report. Every filter of a "
        "layer costs the same (same shapes, same steps), so the halves are equal work, and each "
        "side's whole job is twice its half. Both sides warmed up first; nothing else ran on "
        "the machine.",
        "",
        *side_rows(s, halves=True),
        *LAYER_TABLE_HEAD,
        *rows,
        "",
    ])


def write_results(out: dict[str, Any], seconds: float, layers: list[tuple[str, int]]) -> None:
    rows = out["sample"]
    local_total = sum(r["local"] * r["pages"] for r in rows)
    fleet_total = sum(r["fleet"] * r["pages"] for r in rows)
    sampled_local = sum(r["local"] for r in rows)
    sampled_fleet = sum(r["fleet"] for r in rows)
    head = [
        "# Overnight benchmark: every vgg16-hed filter, fleet of 2 workers vs in-process",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"`bench/bench_overnight.py` ({seconds / 60:.1f} min; load average "
        f"{os.getloadavg()[0]:.1f} at the end; the cores were shared with other work).",
        "",
    ]
    lines = [
        *head,
        "## A. Book settings (40 steps, 64 px): page 0 of each conv layer, then the whole job",
        "",
        "| Layer | Pages in the layer | In-process s/page | Fleet s/page | Fleet vs in-process |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['pages']} | {r['local']:.1f} | {r['fleet']:.1f} | "
                     f"{r['local'] / r['fleet']:.2f}× |")
    verdict = "met" if rows and sampled_local / sampled_fleet >= 0.9 else "not met"
    lines += [] if not rows else [
        f"| **13 sampled pages** | | {sampled_local:.0f} s | {sampled_fleet:.0f} s | "
        f"**{sampled_local / sampled_fleet:.2f}×** (target ≥ 0.9×: {verdict}) |",
        "",
        f"Whole job, 4224 filters in 66 pages (each layer's page time × its pages): in-process "
        f"≈ {local_total / 3600:.2f} h, fleet of 2 workers ≈ {fleet_total / 3600:.2f} h "
        f"({local_total / fleet_total:.2f}×). Measured one page per layer, not all 66: the "
        "other pages of a layer run the same shapes.",
        "",
    ]
    part_b = [
        "## B. 4224 jobs (16 px, 1 step), 2 workers, worker SIGKILLs at random instants",
        "",
        "Visibility timeout 1 h, `CONVATLAS_REQUEUE_AFTER=30`: only the healer brings lost "
        "messages back; a killed worker is restarted 2 s later. No re-submission.",
        "",
        "| kill -9s | Outcomes | Failed | Wall s | vs undisturbed | Requeued by the healer | Duplicates |",
        "|---|---|---|---|---|---|---|",
    ]
    base = out["kills"][0]["wall"]
    for r in out["kills"]:
        h = r["healing"]
        part_b.append(f"| {r['kills']} | {r['done']}/{r['jobs']} | {r['failed']} | "
                     f"{r['wall']:.1f} | {r['wall'] / base:.2f}× | {h.get('requeued', 0)} | "
                     f"{h.get('duplicates', 0)} |")
    if not rows:  # --crashes-only: part B replaces its section, part A stays as it was
        part_b.insert(1, f"\nRun {datetime.datetime.now():%Y-%m-%d %H:%M} "
                         f"(`--crashes-only`, {seconds / 60:.1f} min; load average "
                         f"{os.getloadavg()[0]:.1f} at the end).")
        replace_section("B", part_b)
        return
    # a full run rewrites the head, A and B, and keeps A2 and A3 (``--whole``, ``--split``)
    replace_section("A", lines[len(head):], head=head)
    replace_section("B", part_b)


if __name__ == "__main__":
    main()
