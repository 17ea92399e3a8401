#!/usr/bin/env python
"""Quality and cost of the lucid pattern style beside the book style (issue 14, items 2 and 3).

    .venv/bin/python bench/bench_lucid.py            # full run: the lucid block of RESULTS-lucid.md, the picture
    .venv/bin/python bench/bench_lucid.py --quick    # tiny sizes, smoke check (no write)
    .venv/bin/python bench/bench_lucid.py --skip cost page   # sections: quality curve cost page picture

Model: vgg16-hed (the real offline weights: quality needs trained filters), conv stack at any size.

Quality (not timed):
- selectivity, as tests/unit/test_patterns.py checks it: pattern i should drive filter i harder
  than the other tiles' patterns do (mean over them) and harder than the book's grey-noise start;
  activations are the mean post-ReLU channel on the untransformed pattern pixels, computed plainly;
- transformation robustness: each pattern's own-filter activation under random jitter / scale /
  rotation (Lucid's standard transforms, fresh draws, not the ones the optimiser saw), divided by
  its untransformed activation; median over live filters;
- a quality / steps curve of the lucid style (one trajectory: the uniforms and Adam's state make
  the first s steps of a longer run the same as an s-step run).

Cost (timed): per-step cost at the same batch and size, lucid ÷ book, from the difference of two
step counts (so compilation, dead-filter pass and last forward pass drop out); both styles run one
after the other inside each repeat in a rotating order, and the ratio is the median of the
per-repeat ratios. The CPU is shared (2 cores, other jobs): absolute times drift, ratios much less.
Network FLOPs per step as bench_engine counts them (×3: forward + input grad + weight grad, per
filter) against a float32 matmul peak measured inside every repeat. A whole page (64 filters at
each style's default steps) is timed once per style.

Columns: beats others / noise = share of live tiles whose own activation exceeds the mean of the
other tiles' patterns / the grey-noise start's; own/others = median ratio; robust = median of
E[own activation | Lucid transform] / own activation (min in brackets); own = median activation
(the book's pixels are unbounded, lucid's lie in 0–255: not comparable); in the curve, own rel. =
own activation relative to the longest run's, bN = the book style at its N steps. A full run
rewrites the lucid text block of RESULTS-lucid.md (these tables) and ``bench/raw/lucid.json``;
the reading around it is written by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from measure import (
    REPO,
    Log,
    conv_flops,
    dump_raw,
    interleaved,
    machine_lines,
    matmul_peak,
    median,
    raw_path,
    write_section,
)

sys.path.insert(0, str(REPO))

from convatlas.shared.tf_env import import_tf  # noqa: E402

tf = import_tf()

from convatlas.shared.engine.objectives import feature_model, start_image  # noqa: E402
from convatlas.shared.engine.patterns import Pattern, PatternParams, filter_patterns  # noqa: E402
from convatlas.shared.engine.transforms import apply_transforms, lucid_transforms, n_random  # noqa: E402
from convatlas.shared.models.registry import LoadedModel, get_model  # noqa: E402

warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
tf.get_logger().setLevel("ERROR")  # retracing notes: each style and step count traces once, on purpose

RESULTS = Path(__file__).resolve().parent / "RESULTS-lucid.md"
PICTURE = REPO / "docs" / "img" / "styles-book-vs-lucid.png"
LAYERS = tuple(f"block{b}_conv1" for b in range(1, 6))
STYLES = ("book", "lucid")
COST_TARGET = 1.15
PEAK_TARGET = 0.85


@dataclass(frozen=True)
class Config:
    name: str
    size: int
    quality_filters: int
    quality_layers: tuple[str, ...]
    steps: dict[str, int | None]  # per style; None = the style's default
    robust_draws: int
    curve_layers: tuple[str, ...]
    curve_filters: int
    curve_steps: tuple[int, ...]
    cost_layers: tuple[str, ...]
    cost_filters: int
    cost_steps: tuple[int, int]
    cost_repeats: int
    page_layer: str
    page_filters: int
    picture_layers: tuple[str, ...]
    picture_filters: int
    matmul_n: int


FULL = Config(
    name="full", size=64, quality_filters=16, quality_layers=LAYERS,
    steps={"book": None, "lucid": None}, robust_draws=16,
    curve_layers=("block3_conv1", "block5_conv1"), curve_filters=8,
    curve_steps=(16, 32, 64, 128, 256, 512),
    cost_layers=LAYERS, cost_filters=64, cost_steps=(2, 6), cost_repeats=3,
    page_layer="block3_conv1", page_filters=64,
    picture_layers=("block1_conv1", "block3_conv1", "block5_conv1"), picture_filters=8,
    matmul_n=2048,
)
QUICK = Config(
    name="quick", size=32, quality_filters=4, quality_layers=("block1_conv1", "block3_conv1"),
    steps={"book": 4, "lucid": 6}, robust_draws=2,
    curve_layers=("block3_conv1",), curve_filters=2, curve_steps=(2, 4),
    cost_layers=("block1_conv1",), cost_filters=4, cost_steps=(1, 2), cost_repeats=1,
    page_layer="block1_conv1", page_filters=4,
    picture_layers=("block1_conv1",), picture_filters=4,
    matmul_n=256,
)


log = Log()


# --- quality ----------------------------------------------------------------------------------


def activations(lm: LoadedModel, layer: str, images: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Mean post-activation of every channel, per image: (N, C), eager (as the tests do)."""
    import keras

    fm = feature_model(lm.any_size_model(), layer)
    out = []
    for i in range(0, len(images), chunk):
        _, post = fm(lm.preprocess(images[i : i + chunk].astype("float32")))
        out.append(keras.ops.convert_to_numpy(keras.ops.mean(post, axis=(1, 2))))
    return np.concatenate(out)


def transformed(images: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """``draws`` random Lucid transforms of each image (fresh uniforms), (N·draws, S, S, 3)."""
    import keras

    size = images.shape[1]
    tr = lucid_transforms(size)
    rep = np.repeat(images.astype(np.float32), draws, axis=0)
    u = np.random.default_rng([seed, 99]).random((len(rep), n_random(tr)), dtype=np.float32)
    out = apply_transforms(tr, keras.ops.convert_to_tensor(rep), keras.ops.convert_to_tensor(u))
    return keras.ops.convert_to_numpy(out)


@dataclass
class Quality:
    live: int
    dead: int
    beats_others: float  # share of live tiles whose own activation > mean of the other tiles'
    beats_noise: float  # share of live tiles whose own activation > the grey-noise start's
    own_over_others: float  # median over live tiles of own / mean(others)
    own: float  # median own activation
    robustness: float  # median over live tiles of E[own | transformed] / own
    robust_min: float


def quality(lm: LoadedModel, layer: str, pats: list[Pattern], draws: int, seed: int = 0) -> Quality:
    filters = [p.filter for p in pats]
    raw = np.stack([p.raw for p in pats])
    act = activations(lm, layer, raw)[:, filters]
    size = raw.shape[1]
    noise = activations(lm, layer, np.stack([start_image(f, size, 0) for f in filters]))[:, filters]
    live = [i for i, p in enumerate(pats) if not p.dead and act[i, i] > 0]
    own = np.array([act[i, i] for i in live])
    others = np.array([np.mean([act[k, i] for k in range(len(pats)) if k != i]) for i in live])
    nz = np.array([noise[i, i] for i in live])
    t = transformed(raw[live], draws, seed) if live else raw[:0]
    at = activations(lm, layer, t)[:, filters] if live else np.zeros((0, len(filters)))
    rob = np.array([at[j * draws : (j + 1) * draws, i].mean() / act[i, i] for j, i in enumerate(live)])
    return Quality(
        live=len(live), dead=sum(p.dead for p in pats),
        beats_others=float(np.mean(own > others)) if live else float("nan"),
        beats_noise=float(np.mean(own > nz)) if live else float("nan"),
        own_over_others=median(own / np.maximum(others, 1e-6)), own=median(own),
        robustness=median(rob), robust_min=float(rob.min()) if live else float("nan"),
    )


def params(cfg: Config, style: str, steps: int | None = None) -> PatternParams:
    return PatternParams(size=cfg.size, steps=steps if steps is not None else cfg.steps[style], style=style)


def bench_quality(cfg: Config, lm: LoadedModel) -> dict[tuple[str, str], list[Pattern]]:
    log(f"\n## 1. Quality: vgg16-hed, filters 0–{cfg.quality_filters - 1} of each layer, {cfg.size} px, "
        "each style at its default steps")
    head = f"{'layer':<13} {'style':<6} {'steps':>5} {'live':>4} {'dead':>4} {'beats others':>12} {'beats noise':>11} {'own/others':>10} {'own':>8} {'robust':>15} {'time':>7}"
    log(head)
    log("-" * len(head))
    out: dict[tuple[str, str], list[Pattern]] = {}
    filters = list(range(cfg.quality_filters))
    for layer in cfg.quality_layers:
        for style in STYLES:
            p = params(cfg, style)
            t0 = time.perf_counter()
            pats = filter_patterns(lm, layer, filters, p, batch_size=len(filters))
            dt = time.perf_counter() - t0
            out[(layer, style)] = pats
            q = quality(lm, layer, pats, cfg.robust_draws)
            log(f"{layer:<13} {style:<6} {p.steps:>5} {q.live:>4} {q.dead:>4} {q.beats_others:>12.2f} "
                f"{q.beats_noise:>11.2f} {q.own_over_others:>10.2f} {q.own:>8.1f} "
                f"{q.robustness:>7.2f} ({q.robust_min:>4.2f}) {dt:>6.0f}s")
    return out


def bench_curve(cfg: Config, lm: LoadedModel) -> None:
    log(f"\n## 2. lucid quality / steps: vgg16-hed, filters 0–{cfg.curve_filters - 1}, {cfg.size} px")
    head = f"{'layer':<13} {'steps':>5} {'own rel.':>8} {'beats others':>12} {'own/others':>10} {'robust':>7} {'time':>7}"
    log(head)
    log("-" * len(head))
    filters = list(range(cfg.curve_filters))
    for layer in cfg.curve_layers:
        runs: dict[int, list[Pattern]] = {}
        times: dict[int, float] = {}
        for s in cfg.curve_steps:
            t0 = time.perf_counter()
            runs[s] = filter_patterns(lm, layer, filters, params(cfg, "lucid", s), batch_size=len(filters))
            times[s] = time.perf_counter() - t0
        last = runs[cfg.curve_steps[-1]]
        for s in cfg.curve_steps:
            q = quality(lm, layer, runs[s], cfg.robust_draws)
            rel = [a.final_activation / b.final_activation for a, b in zip(runs[s], last, strict=True)
                   if not b.dead and b.final_activation > 0]
            log(f"{layer:<13} {s:>5} {median(rel):>8.2f} {q.beats_others:>12.2f} {q.own_over_others:>10.2f} "
                f"{q.robustness:>7.2f} {times[s]:>6.0f}s")
        pb = params(cfg, "book")
        book = filter_patterns(lm, layer, filters, pb, batch_size=len(filters))
        q = quality(lm, layer, book, cfg.robust_draws)
        log(f"{layer:<13} {f'b{pb.steps}':>5} {'':>8} {q.beats_others:>12.2f} {q.own_over_others:>10.2f} {q.robustness:>7.2f}")


# --- cost -------------------------------------------------------------------------------------


def bench_cost(cfg: Config, lm: LoadedModel, peak: Callable[[], float]) -> dict[str, dict[str, float]]:
    a, b = cfg.cost_steps
    n = cfg.cost_filters
    log(f"\n## 3. Cost per step: {n} filters in one batch, {cfg.size} px, lucid ÷ book")
    filters = list(range(n))
    head = (f"{'layer':<13} {'book ms/step':>12} {'lucid ms/step':>13} {'lucid/book':>10} {'target':>7} "
            f"{'book/peak':>9} {'lucid/peak':>10}  runs lucid/book")
    log(head)
    log("-" * len(head))
    summary: dict[str, dict[str, float]] = {}
    for layer in cfg.cost_layers:
        for style in STYLES:  # compile for both step counts (the shapes of the uniforms differ)
            for s in (a, b):
                filter_patterns(lm, layer, filters, params(cfg, style, s), batch_size=n)
        tasks: dict[str, Callable[[], Any]] = {"peak": peak}
        for style in STYLES:
            for s in (a, b):
                tasks[f"{style}{s}"] = (
                    lambda style=style, s=s, layer=layer: filter_patterns(
                        lm, layer, filters, params(cfg, style, s), batch_size=n)
                )
        t = interleaved(tasks, cfg.cost_repeats)
        per = {st: [(x - y) / (b - a) for x, y in zip(t[f"{st}{b}"], t[f"{st}{a}"], strict=True)] for st in STYLES}
        ratio = [x / y for x, y in zip(per["lucid"], per["book"], strict=True)]
        f_step = n * 3 * conv_flops(lm.any_size_model(), layer, cfg.size)
        top = max(t["peak"])
        frac = {st: median([f_step / x / 1e9 / top for x in per[st]]) for st in STYLES}
        fixed = {st: median([y - a * x for x, y in zip(per[st], t[f"{st}{a}"], strict=True)]) for st in STYLES}
        summary[layer] = {"book": median(per["book"]), "lucid": median(per["lucid"]), "ratio": median(ratio),
                          "book_fixed": fixed["book"], "lucid_fixed": fixed["lucid"]}
        verdict = "ok" if median(ratio) <= COST_TARGET else "MISS"
        log(f"{layer:<13} {median(per['book']) * 1e3:>12.0f} {median(per['lucid']) * 1e3:>13.0f} {median(ratio):>10.2f} "
            f"{verdict:>7} {frac['book']:>9.2f} {frac['lucid']:>10.2f}  {', '.join(f'{r:.2f}' for r in ratio)}")
    log(f"matmul peak, best of the run: {max(t['peak']):.0f} GFLOP/s")
    return summary


def bench_page(cfg: Config, lm: LoadedModel, cost: dict[str, dict[str, float]]) -> None:
    log(f"\n## 4. A whole page: {cfg.page_filters} filters of {cfg.page_layer}, {cfg.size} px, default steps")
    filters = list(range(cfg.page_filters))
    for style in STYLES:
        p = params(cfg, style)
        for warm in (1, 2):  # compiled for any step count at this batch: the page times no tracing
            filter_patterns(lm, cfg.page_layer, filters, params(cfg, style, warm), batch_size=len(filters))
        t0 = time.perf_counter()
        filter_patterns(lm, cfg.page_layer, filters, p, batch_size=len(filters))
        log(f"  {style:<6} {p.steps:>4} steps: {time.perf_counter() - t0:6.1f} s measured")
    if cost:
        log("  estimated from section 3 (fixed part + default steps × per-step cost, 64 filters):")
        for layer, c in cost.items():
            est = {st: c[f"{st}_fixed"] + params(cfg, st).steps * c[st] for st in STYLES}
            log(f"    {layer:<13} book {est['book']:6.1f} s   lucid {est['lucid']:6.1f} s")


# --- picture ----------------------------------------------------------------------------------


def picture(cfg: Config, pats: dict[tuple[str, str], list[Pattern]], path: Path) -> None:
    from PIL import Image, ImageDraw

    k, s, gap, label_w, zoom = cfg.picture_filters, cfg.size, 4, 150, 2
    layers = [la for la in cfg.picture_layers if (la, "book") in pats]
    tile = s * zoom
    w = label_w + k * (tile + gap)
    h = len(layers) * 2 * (tile + gap) + len(layers) * gap * 3 + 24
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    steps = {st: params(cfg, st).steps for st in STYLES}
    draw.text((4, 4), f"vgg16-hed, filters 0-{k - 1}, {s} px: book ({steps['book']} steps) vs "
              f"lucid ({steps['lucid']} steps)", fill=(0, 0, 0))
    y = 24
    for layer in layers:
        for style in STYLES:
            draw.text((4, y + tile // 2 - 12), layer, fill=(0, 0, 0))
            draw.text((4, y + tile // 2 + 2), style, fill=(90, 90, 90))
            for j, p in enumerate(pats[(layer, style)][:k]):
                im = Image.fromarray(p.image).resize((tile, tile), Image.NEAREST)
                img.paste(im, (label_w + j * (tile + gap), y))
            y += tile + gap
        y += gap * 3
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    log(f"\npicture: {path}")


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, smoke check (no write)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["quality", "curve", "cost", "page", "picture"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    t0, load0 = time.perf_counter(), os.getloadavg()
    for line in machine_lines():
        log(line)
    log(f"command: bench/bench_lucid.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    lm = get_model("vgg16-hed")
    pats: dict[tuple[str, str], list[Pattern]] = {}
    if "quality" not in args.skip:
        pats = bench_quality(cfg, lm)
    if "curve" not in args.skip:
        bench_curve(cfg, lm)
    cost: dict[str, dict[str, float]] = {}
    if "cost" not in args.skip:
        cost = bench_cost(cfg, lm, matmul_peak(cfg.matmul_n, 5))
    if "page" not in args.skip:
        bench_page(cfg, lm, cost)
    write = not args.quick and not args.no_write
    if "picture" not in args.skip and pats:
        picture(cfg, pats, PICTURE if write else Path("/tmp/styles-book-vs-lucid-quick.png"))
    load1 = os.getloadavg()
    log(f"\nwall time {time.perf_counter() - t0:.0f} s; load average (1 min) {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end on {os.cpu_count()} cores (other jobs share the machine)")
    if write:
        write_section(RESULTS, "lucid", log.lines)
    dump_raw(raw_path("lucid", args.quick), {"lines": log.lines, "cost": cost})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
