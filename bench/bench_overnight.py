#!/usr/bin/env python
"""Benchmark: the overnight job (every filter of every vgg16-hed layer) on a fleet of 2 workers
vs in-process, and a 4224-job run with 3 worker ``kill -9``s (issue 11).

    .venv/bin/python bench/bench_overnight.py            # parts A and B
    .venv/bin/python bench/bench_overnight.py --quick    # 2 layers, 1 kill: smoke check
    .venv/bin/python bench/bench_overnight.py --crashes-only   # part B alone
    .venv/bin/python bench/bench_overnight.py --whole    # A2: the whole job, both sides (~3 h)
    .venv/bin/python bench/bench_overnight.py --split    # A3: half of every layer each (~1.5 h)
    .venv/bin/python bench/bench_overnight.py --whole --smoke   # (or --split --smoke) smoke check

Each part prints its tables and writes its raw measurements (``bench/raw/overnight-<part>.json``;
a quick or smoke run's in the temp folder); the reading is written by hand in
``RESULTS-overnight.md``.

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
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import REPO, dump_raw, machine_info, raw_path, table

sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    ap.add_argument("--quick", action="store_true", help="2 layers, 1 kill: smoke check")
    ap.add_argument("--crashes-only", action="store_true", help="run part B only")
    ap.add_argument("--whole", action="store_true",
                    help="run the whole job at book settings on both sides (part A2) only")
    ap.add_argument("--smoke", action="store_true",
                    help="with --whole or --split: 16 px, 1 step, 1-2 layers, to check the script")
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
    out.update(machine_info(), minutes=(time.time() - t_start) / 60)
    part = "B" if args.crashes_only else "A-B"
    dump_raw(raw_path(f"overnight-{part}", args.quick), out)
    print(parts_table(out))


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


def side_table(s: Sides, halves: bool) -> str:
    """The two sides' wall time, outcomes and healing, and fleet vs in-process; with ``halves``
    each side's measured half beside its whole job (2 × half)."""
    healing = s.fleet_report.get("healing") or {}
    rows = []
    for side, t, rep, heal in (("in-process", s.t_local, s.local_report, {}),
                               ("fleet, 2 workers", s.t_fleet, s.fleet_report, healing)):
        whole = 2 * t if halves else t
        rows.append((side, *((f"{t:.0f}",) if halves else ()), f"{whole:.0f} ({whole / 3600:.2f} h)",
                     rep["counts"]["done"], rep["counts"]["failed"], heal.get("requeued", "-"),
                     heal.get("duplicates", "-")))
    head = ("side", *(("half s",) if halves else ()), "whole job s", "outcomes", "failed",
            "requeued", "duplicates")
    return (table(head, rows) + f"\n\nfleet vs in-process, the whole job: {s.ratio:.2f}x "
            f"(target >= 0.9x: {'met' if s.ratio >= 0.9 else 'NOT MET'})")


def sides_raw(s: Sides) -> dict[str, Any]:
    return {**machine_info(), "started": f"{s.started:%Y-%m-%d %H:%M}", "load_start": s.load_start,
            "load_end": os.getloadavg()[0], "local_jobs": len(s.local_plan.jobs),
            "fleet_jobs": len(s.fleet_plan.jobs), "t_local": s.t_local, "t_fleet": s.t_fleet,
            "local_counts": s.local_report["counts"], "fleet_counts": s.fleet_report["counts"],
            "healing": s.fleet_report.get("healing"), "local_layers": s.local_layers,
            "fleet_layers": s.fleet_layers}


def whole_job(smoke: bool = False) -> None:
    """A2: every filter of every layer at book settings, in-process then on the fleet."""
    from convatlas.producer.plans.grids import plan_grids
    from convatlas.shared.engine.patterns import PatternParams

    def plans(settings: Any) -> tuple[Any, Any]:
        plan = (plan_grids(MODEL, "block1_conv1", "all", PatternParams(16, 1, seed=7), settings)
                if smoke else plan_grids(MODEL, "all", "all", PatternParams(), settings))
        return plan, plan

    s = both_sides("A2", plans)
    dump_raw(raw_path("overnight-A2", smoke), sides_raw(s))
    print(side_table(s, halves=False))


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


def layer_table(local_layers: dict[str, float], fleet_layers: dict[str, float]) -> str:
    """Per layer, in the model's order: seconds from each side's start to the layer's last
    outcome marker, and the layer's own share (from the previous layer's last marker)."""
    rows, prev_l, prev_f = [], 0.0, 0.0
    for name, channels in conv_layers():
        if name not in local_layers:
            continue
        cl, cf = local_layers[name], fleet_layers[name]
        dl, df = cl - prev_l, cf - prev_f
        prev_l, prev_f = cl, cf
        rows.append((name, f"{channels // 2} + {channels - channels // 2}", f"{cl:.0f}",
                     f"{cf:.0f}", f"{cl / cf if cf else float('nan'):.2f}x", f"{dl:.0f}",
                     f"{df:.0f}"))
    return table(("layer", "filters (local + fleet)", "in-process to its end s",
                  "fleet to its end s", "fleet vs in-process", "in-process share s",
                  "fleet share s"), rows)


def split_job(smoke: bool = False) -> None:
    """A3: the whole job computed once, half of every layer on each side, in one run."""
    s = both_sides("A3", lambda settings: half_plans(settings, smoke), layer_times=True)
    dump_raw(raw_path("overnight-A3", smoke), sides_raw(s))
    print(side_table(s, halves=True))
    print(layer_table(s.local_layers, s.fleet_layers))


def parts_table(out: dict[str, Any]) -> str:
    """Part A's sampled pages (with the whole job extrapolated) and part B's runs, as tables."""
    rows, text = out["sample"], []
    if rows:
        loc, flt = sum(r["local"] for r in rows), sum(r["fleet"] for r in rows)
        whole_l = sum(r["local"] * r["pages"] for r in rows)
        whole_f = sum(r["fleet"] * r["pages"] for r in rows)
        text += [table(("layer", "pages in the layer", "in-process s/page", "fleet s/page",
                        "fleet vs in-process"),
                       [*[(r["layer"], r["pages"], f"{r['local']:.1f}", f"{r['fleet']:.1f}",
                           f"{r['local'] / r['fleet']:.2f}x") for r in rows],
                        ("sampled pages", "", f"{loc:.0f}", f"{flt:.0f}", f"{loc / flt:.2f}x")]),
                 f"A: {loc / flt:.2f}x (target >= 0.9x: {'met' if loc / flt >= 0.9 else 'NOT MET'}); "
                 f"whole job extrapolated: in-process {whole_l / 3600:.2f} h, fleet "
                 f"{whole_f / 3600:.2f} h ({whole_l / whole_f:.2f}x)", ""]
    base = out["kills"][0]["wall"]
    text.append(table(("kill -9s", "outcomes", "failed", "wall s", "vs undisturbed", "requeued",
                       "duplicates"),
                      [(r["kills"], f"{r['done']}/{r['jobs']}", r["failed"], f"{r['wall']:.1f}",
                        f"{r['wall'] / base:.2f}x", r["healing"].get("requeued", 0),
                        r["healing"].get("duplicates", 0)) for r in out["kills"]]))
    return "\n".join(text)


if __name__ == "__main__":
    main()
