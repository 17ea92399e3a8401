#!/usr/bin/env python
"""Which pattern to trust (issue 27 bench, first part): maco vs lucid vs book on vgg16-hed.

    .venv/bin/python bench/bench_trust.py --smoke    # tiny: block1_conv1, 4 filters, 32 px, 2/4 steps; no write
    .venv/bin/python bench/bench_trust.py            # block1/3/5_conv1, 16 filters, 64 px; writes RESULTS-trust.md

Per style and layer: the median transform robustness of the patterns (the records' ``robustness``:
activation kept under 8 fresh Lucid jitter/scale/rotation draws, ``engine/quality.py``), the
median final activation, and the per-step cost: the time of a ``b``-step run minus an
``a``-step run, over ``b − a`` (compilation and the scoring pass drop out), every style run in
a rotating order inside each repeat, the median over repeats. Target (issue 27): at block5 maco's
robustness ≥ lucid's, and its cost per step ≤ 1.2× lucid's. Path similarity needs the examples'
activations (not computed yet): its column says so.
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


def lines(data: dict) -> list[str]:
    rows = []
    for layer, row in data["layers"].items():
        lucid = row["lucid"]["per_step_s"]
        for style in STYLES:
            r = row[style]
            rows.append([layer, style, f"{r['robustness']:.3f}", "not computed", f"{r['final']:.3g}",
                         f"{1000 * r['per_step_s']:.1f}", f"{r['per_step_s'] / lucid:.2f}"])
    head = ["layer", "style", "robust", "path sim.", "final act.", "ms/step", "× lucid"]
    return [f"{data['filters']} filters, {data['size']} px, steps {data['steps']}", "",
            table(head, rows), "", *machine_lines()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, no write")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--raw", type=Path, default=None)
    args = ap.parse_args(argv)
    data = run(args.smoke, args.repeats or (1 if args.smoke else 3))
    text = lines(data)
    print("\n".join(text))
    dump_raw(raw_path("trust", args.smoke, args.raw), data)
    if not args.smoke:
        write_section(BENCH / "RESULTS-trust.md", "trust", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
