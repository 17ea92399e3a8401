#!/usr/bin/env python
"""Where a lucid step's time goes at a layer (default block1_conv1), vs the book's step.

    .venv/bin/python bench/probe_lucid_cost.py [LAYER]

Per-step cost (T(24 steps) − T(4 steps)) / 20 of the compiled ascent, 64 filters at 64 px, for
the book, the lucid style, and lucid with one factor at a time (the Fourier parametrisation with
Adam but no transforms; the transforms alone on raw pixels with the book's step); then the
parametrisation's render alone, forward + gradient, with no network: the floor the lucid style
adds to every step whatever the layer. Medians of 3 interleaved repeats.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convatlas.shared.engine.backend import build_ascent, constant  # noqa: E402
from convatlas.shared.engine.objectives import selected_channels  # noqa: E402
from convatlas.shared.engine.optimisers import Adam  # noqa: E402
from convatlas.shared.engine.param.fourier import FourierImage  # noqa: E402
from convatlas.shared.engine.param.pixels import Pixels  # noqa: E402
from convatlas.shared.engine.transforms import (  # noqa: E402
    apply_transforms,
    draw_uniforms,
    lucid_transforms,
    n_random,
)
from convatlas.shared.models.registry import get_model  # noqa: E402
from convatlas.shared.tf_env import import_tf  # noqa: E402

S, N = 64, 64


def main() -> None:
    layer = sys.argv[1] if len(sys.argv) > 1 else "block1_conv1"
    tf = import_tf()
    lm = get_model("vgg16-hed")
    feat = selected_channels(lm.any_size_model("float32"), layer)
    variants = {
        "book": (None, (), None),
        "lucid": (FourierImage(S), lucid_transforms(S), Adam()),
        "fourier+adam, no transforms": (FourierImage(S), (), Adam()),
        "transforms on pixels, book step": (None, lucid_transforms(S), None),
    }
    fns = {k: build_ascent(feat, lm.preprocess, p, t, o) for k, (p, t, o) in variants.items()}
    filters = constant(list(range(N)), "int32")

    def run(k: str, steps: int) -> float:
        p, t, _ = variants[k]
        param = p or Pixels(S)
        v0 = np.stack([param.init(f, 0) for f in range(N)])
        u = (np.stack([draw_uniforms(t, f, steps, 0) for f in range(N)]) if n_random(t)
             else np.zeros((N, steps, 0), np.float32))
        t0 = time.perf_counter()
        out = fns[k](constant(v0), filters, constant(steps, "int32"), constant(1.0, "float32"),
                     constant(True), constant(u))
        out[0].numpy()
        return time.perf_counter() - t0

    fourier, warp = FourierImage(S), lucid_transforms(S)

    @tf.function
    def render_only(v, u, steps):  # noqa: ANN001, ANN202
        for t in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(v)
                x = fourier.to_pixels(v)
                if u is not None:
                    x = apply_transforms(warp, x, u[:, t])
                total = tf.reduce_sum(x)
            v = v + 1e-3 * tape.gradient(total, v)
        return v

    v0 = constant(np.stack([fourier.init(f, 0) for f in range(N)]))
    u24 = constant(np.stack([draw_uniforms(warp, f, 24, 0) for f in range(N)]))

    def run_render(with_warp: bool, steps: int) -> float:
        t0 = time.perf_counter()
        render_only(v0, u24 if with_warp else None, constant(steps, "int32")).numpy()
        return time.perf_counter() - t0

    tasks = {k: (lambda k=k, s=0: run(k, s)) for k in fns}
    tasks["render alone (fourier → pixels), fwd + grad"] = lambda s=0: run_render(False, s)
    tasks["render + transforms alone, fwd + grad"] = lambda s=0: run_render(True, s)
    keys = list(tasks)
    for k in keys:  # compile both step counts' shapes
        for s in (2, 12):
            _call(k, fns, run, run_render, s)
    per: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(3):
        for k in keys:
            a, b = _call(k, fns, run, run_render, 4), _call(k, fns, run, run_render, 24)
            per[k].append((b - a) / 20 * 1e3)
    book = statistics.median(per["book"])
    print(f"layer {layer}, {N} filters, {S} px; ms per step (median of 3), ÷ the book's step")
    for k in keys:
        m = statistics.median(per[k])
        print(f"  {k:<46} {m:7.2f} ms  {m / book:5.2f}×  runs {', '.join(f'{x:.1f}' for x in per[k])}")


def _call(k, fns, run, run_render, steps):  # noqa: ANN001, ANN202
    if k in fns:
        return run(k, steps)
    return run_render("transforms" in k, steps)


if __name__ == "__main__":
    main()
