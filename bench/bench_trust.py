#!/usr/bin/env python
"""Which pattern to trust (issue 27 bench, first part): maco vs lucid vs book on vgg16-hed.

    .venv/bin/python bench/bench_trust.py --smoke    # tiny: block1_conv1, 4 filters, 32 px, 2/4 steps; no write
    .venv/bin/python bench/bench_trust.py            # block1/3/5_conv1, 16 filters, 64 px; writes RESULTS-trust.md
    .venv/bin/python bench/bench_trust.py --paths /tmp/trust-paths   # path similarity (below)

Per style and layer: the median transform robustness of the patterns (the records' ``robustness``:
activation kept under 8 fresh Lucid jitter/scale/rotation draws, ``engine/quality.py``), the
median final activation, and the per-step cost: the time of a ``b``-step run minus an
``a``-step run, over ``b − a`` (compilation and the scoring pass drop out), every style run in
a rotating order inside each repeat, the median over repeats. Target (issue 27): at block5 maco's
robustness ≥ lucid's, and its cost per step ≤ 1.2× lucid's. Path similarity needs each unit's
top examples, so ``--paths`` measures it the way a user gets it: ``convatlas examples`` on 200
generated 2 MP photos, ``grids`` in each style and ``atlas``, whose quality records it reads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from measure import (
    BENCH,
    dump_raw,
    interleaved,
    machine_lines,
    median,
    raw_path,
    say,
    table,
    write_section,
)

STYLES = ("book", "lucid", "maco")


def run(smoke: bool, repeats: int) -> dict:
    from convatlas.shared.engine.patterns import PatternParams, filter_patterns
    from convatlas.shared.models.registry import get_model

    layers = ["block1_conv1"] if smoke else ["block1_conv1", "block3_conv1", "block5_conv1"]
    filters = list(range(4 if smoke else 16))
    size = 32 if smoke else 64
    a, b = (2, 4) if smoke else (8, 24)
    quality_steps = {"book": 4, "lucid": 4, "maco": 4} if smoke else {"book": 40, "lucid": 256, "maco": 256}
    lm = get_model("vgg16-hed")
    out: dict = {"layers": {}, "size": size, "filters": len(filters), "steps": [a, b]}
    for layer in layers:
        say(f"{layer}: quality")
        row: dict = {}
        for style in STYLES:
            got = filter_patterns(lm, layer, filters, PatternParams(size=size, steps=quality_steps[style], style=style))
            row[style] = {"robustness": median(p.robustness for p in got if p.robustness is not None),
                          "final": median(p.final_activation for p in got)}
        say(f"{layer}: cost")

        def timed(style: str, steps: int, layer: str = layer) -> float:
            t0 = time.perf_counter()
            filter_patterns(lm, layer, filters, PatternParams(size=size, steps=steps, style=style))
            return time.perf_counter() - t0

        for style in STYLES:  # compile once outside the timing
            timed(style, a)
        per_step = interleaved({s: (lambda s=s: (timed(s, b) - timed(s, a)) / (b - a)) for s in STYLES}, repeats)
        for style in STYLES:
            row[style]["per_step_s"] = median(per_step[style])
        out["layers"][layer] = row
    return out


def paths(smoke: bool, work: Path) -> dict:
    """Path similarity as a user gets it: ``convatlas examples`` on generated 2 MP photos,
    ``convatlas grids`` in each style, then ``convatlas atlas``, which scores each pattern
    against its unit's top examples (``shared/atlas/scores.py``); the atlas's quality records
    are read back. Median over the filters of the best example's path similarity."""
    import json
    import subprocess

    from bench_examples import make_photos

    layers = ["block1_conv1", "block3_conv1"] if smoke else ["block1_conv1", "block3_conv1", "block5_conv1"]
    n_filters, size, n_photos = (4, 32, 12) if smoke else (16, 64, 200)
    steps = {"book": 4, "lucid": 4, "maco": 4} if smoke else {"book": 40, "lucid": 256, "maco": 256}
    photos = make_photos(work / "photos", n_photos)
    out = work / "results"
    cli = [sys.executable, "-m", "convatlas.producer.cli"]

    def call(*args: str) -> None:
        t0 = time.perf_counter()
        subprocess.run([*cli, *args], check=True, capture_output=True, text=True)
        say(f"  {args[0]} {' '.join(a for a in args[1:] if not a.startswith('/'))[:70]}: "
            f"{time.perf_counter() - t0:.0f} s")

    call("examples", str(photos[0].parent), "--model", "vgg16-hed", "--layers", ",".join(layers),
         "--out", str(out), "--quiet")
    for style in STYLES:
        call("grids", "--model", "vgg16-hed", "--layers", ",".join(layers), "--filters",
             f"0:{n_filters}", "--size", str(size), "--steps", str(steps[style]), "--style", style,
             "--out", str(out), "--quiet")
    call("atlas", "--model", "vgg16-hed", "--results", str(out), "--out", str(work / "site"))
    got: dict = {}
    for f in out.rglob("quality/*/f*.json"):
        rec = json.loads(f.read_text())
        slug = str(rec.get("slug", ""))
        style = next((s for s in ("lucid", "maco") if s in slug), "book")
        if rec.get("path_similarity") is not None:
            got.setdefault(rec["layer"], {}).setdefault(style, []).append(rec["path_similarity"])
    return {"photos": n_photos, "filters": n_filters, "size": size, "steps": steps,
            "layers": {layer: {s: {"median": median(v), "n": len(v)} for s, v in by.items()}
                       for layer, by in got.items()}}


def path_lines(data: dict) -> list[str]:
    rows = [[layer, style, f"{r['median']:.3f}", str(r["n"])]
            for layer, by in sorted(data["layers"].items()) for style, r in sorted(by.items())]
    return [f"{data['filters']} filters, {data['size']} px, steps {data['steps']}, examples from "
            f"{data['photos']} photos (2 MP)", "",
            table(["layer", "style", "path sim. (median best)", "units"], rows), "",
            *machine_lines()]


def lines(data: dict) -> list[str]:
    rows = []
    for layer, row in data["layers"].items():
        lucid = row["lucid"]["per_step_s"]
        for style in STYLES:
            r = row[style]
            rows.append([layer, style, f"{r['robustness']:.3f}", f"{r['final']:.3g}",
                         f"{1000 * r['per_step_s']:.1f}", f"{r['per_step_s'] / lucid:.2f}"])
    head = ["layer", "style", "robust", "final act.", "ms/step", "× lucid"]
    return [f"{data['filters']} filters, {data['size']} px, steps {data['steps']}", "",
            table(head, rows), "", *machine_lines()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, no write")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--raw", type=Path, default=None)
    ap.add_argument("--paths", type=Path, default=None, metavar="WORKDIR",
                    help="instead: path similarity through examples + grids + atlas, in WORKDIR")
    args = ap.parse_args(argv)
    if args.paths is not None:
        name, data = "trust-paths", paths(args.smoke, args.paths)
        text = path_lines(data)
    else:
        name, data = "trust", run(args.smoke, args.repeats or (1 if args.smoke else 3))
        text = lines(data)
    print("\n".join(text))
    dump_raw(raw_path(name, args.smoke, args.raw), data)
    if not args.smoke:
        write_section(BENCH / "RESULTS-trust.md", name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
