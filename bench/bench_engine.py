#!/usr/bin/env python
"""Benchmark of the engine (filter patterns, Grad-CAM) against the book's loops and tf-keras-vis.

    .venv/bin/python bench/bench_engine.py            # full run (~10 min on 2 quiet cores, ~18 under load)
    .venv/bin/python bench/bench_engine.py --quick    # tiny sizes, smoke check (seconds; no write)
    .venv/bin/python bench/bench_engine.py --ideas    # side-by-side speed-up experiments only

A full run rewrites its text block of RESULTS.md (``main`` or ``ideas``: the figures it printed)
and the raw measurements (``bench/raw/engine-main.json`` / ``engine-ideas.json``); the reading
around the blocks is written by hand.

Every figure is a RATIO of two things measured side by side in one process: the contenders of a
section run one after the other inside each repeat, in a rotating order, and the ratio is taken
per repeat and then the median over repeats. Absolute times are shown for context only: the machine
is shared, so they drift between repeats, ratios much less.

Model: Keras VGG16 with random weights (seeded); ImageNet weights cannot be downloaded here and do
not change the cost. Filter patterns use the conv stack with any input size (64 px), Grad-CAM the
full classifier at 224 px with pre-softmax logits, both wrapped as ``LoadedModel`` like the built-in
``vgg16``.

tf-keras-vis (bench-only dependency: ``pip install tf-keras-vis``) is optional; without it its rows
say why they are missing.

1. Filter grid: engine = ``filter_patterns`` (all filters in one call); book = DLwP 5.38 eager
   loop, one filter at a time, on a SUBSET of filters (per-filter times compared); tf-keras-vis
   AM batched (all filters, one call) and single (the subset, one call per filter). GFLOP/s:
   filters × ((steps + 1) × 3 + 1) × F_fwd, F_fwd = Σ conv 2·kh·kw·Cin·Cout·Hout·Wout up to the
   layer (steps + 1 forward+backward passes, one forward pass on the result; ×3 = forward +
   input-grad + weight-grad as customary, the target is checked on it; ×2 = the work actually
   done, no weight gradients). engine_bf16 = the same engine with ``--precision bfloat16``.
2. Grad-CAM: engine = ``grad_cam(batch_size=batch)``; predict = ``model.predict`` on the same
   batch (forward only); book = DLwP one-image eager loop; tf-keras-vis = Gradcam with
   ``expand_cam=False`` (14×14 maps like the engine). Explicit classes; preprocessing timed.
Ideas: engine variants vs the engine as it is (ratio > 1: the variant is faster); agreement after
ONE step (the ascent amplifies rounding differences over many steps on random weights).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
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
    raw_path,
    write_section,
)
from measure import median as med

sys.path.insert(0, str(REPO))

from convatlas.shared.tf_env import import_tf  # noqa: E402

tf = import_tf()
import keras  # noqa: E402

from convatlas.shared.engine import backend  # noqa: E402
from convatlas.shared.engine.cam_runner import grad_cam  # noqa: E402
from convatlas.shared.engine.objectives import RMS_EPS, selected_channels, start_image  # noqa: E402
from convatlas.shared.engine.patterns import PatternParams, filter_patterns  # noqa: E402
from convatlas.shared.models.preprocessing import CAFFE_MEAN_BGR, caffe  # noqa: E402
from convatlas.shared.models.registry import BUILTIN, LoadedModel  # noqa: E402

warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
warnings.filterwarnings("ignore", category=DeprecationWarning)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
GRADCAM_LAYER = "block5_conv3"


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    name: str
    filters: int  # filters per layer, all in one engine call
    steps: int
    size: int
    layers: tuple[str, ...]
    subset: dict[str, int]  # filters run by the slow one-at-a-time loops (book, tf-keras-vis)
    repeats: int
    cam_batch: int  # images per Grad-CAM batch (224 px)
    cam_book: int  # images run through the book's one-image loop
    matmul_n: int
    matmul_tries: int
    ideas_steps: int
    ideas_xla_filters: int


FULL = Config(
    name="full",
    filters=64,
    steps=40,
    size=64,
    layers=("block1_conv1", "block3_conv1", "block5_conv1"),
    subset={"block1_conv1": 16, "block3_conv1": 8, "block5_conv1": 4},
    repeats=3,
    cam_batch=32,
    cam_book=8,
    matmul_n=2048,
    matmul_tries=10,
    ideas_steps=10,
    ideas_xla_filters=16,
)
QUICK = Config(
    name="quick",
    filters=8,
    steps=3,
    size=32,
    layers=("block1_conv1", "block3_conv1", "block5_conv1"),
    subset={"block1_conv1": 2, "block3_conv1": 2, "block5_conv1": 2},
    repeats=2,
    cam_batch=2,
    cam_book=2,
    matmul_n=512,
    matmul_tries=3,
    ideas_steps=2,
    ideas_xla_filters=4,
)

TARGETS = {  # (section key) -> minimum ratio
    ("grid", "block1_conv1"): 8.0,
    ("grid", "block3_conv1"): 3.0,
    ("grid", "block5_conv1"): 3.0,
    "peak_deep": 0.9,
    "cam_book": 4.0,
    "cam_predict": 0.9,
    "cam_tfkv": 3.0,
    "am_batched": 1.8,
    "am_single": 5.0,
}
BF16 = "bfloat16"  # the engine's opt-in precision, measured beside the float32 default
DEEP = ("block3_conv1", "block5_conv1")


# --- output ---------------------------------------------------------------------------------------


log = Log()


@dataclass
class Row:
    section: str
    what: str
    ratio: float | None
    target: float | None
    note: str = ""
    best: float | None = None  # same ratio from each side's best (least disturbed) run

    def verdict(self) -> str:
        if self.ratio is None:
            return "n/a"
        if self.target is None:
            return "info"
        return "ok" if self.ratio >= self.target else "MISS"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)  # every matmul GFLOP/s measured
    gflops: dict[tuple[str, str], dict[int, list[float]]] = field(default_factory=dict)  # GFLOP/s per (layer, engine), factor, repeat

    def add(self, *a: Any, **k: Any) -> None:
        self.rows.append(Row(*a, **k))

    def table(self) -> str:
        head = (
            f"{'section':<20} {'comparison':<66} {'median':>7} {'best':>6} {'target':>7}  verdict"
        )
        out = [head, "-" * len(head)]
        for r in self.rows:
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
            best = "-" if r.best is None else f"{r.best:.2f}"
            target = "-" if r.target is None else f">={r.target:g}"
            out.append(
                f"{r.section:<20} {r.what:<66} {ratio:>7} {best:>6} {target:>7}  {r.verdict()}"
            )
            if r.note:
                out.append(f"{'':<22}   {r.note}")
        return "\n".join(out)


# --- timing ---------------------------------------------------------------------------------------


def ratios(num: list[float], den: list[float], scale: float = 1.0) -> float:
    """Median over repeats of num[r] / den[r] × scale (both measured in the same repeat)."""
    return med([a / b * scale for a, b in zip(num, den, strict=True)])


def speedup(slow: list[float], fast: list[float]) -> tuple[float, float]:
    """Times per unit of work → (median of per-repeat slow/fast, best slow / best fast)."""
    return ratios(slow, fast), min(slow) / min(fast)


def runs(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


# --- models ---------------------------------------------------------------------------------------


def vgg16_models() -> tuple[LoadedModel, LoadedModel]:
    """(conv stack any size, classifier at 224), random weights, as ``LoadedModel``s."""
    keras.utils.set_random_seed(0)
    convs = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    full = keras.applications.VGG16(weights=None, classifier_activation=None)
    spec = BUILTIN["vgg16"]
    return (
        LoadedModel(spec=spec, model=convs, weights_id="random", load_seconds=0.0),
        LoadedModel(spec=spec, model=full, weights_id="random", load_seconds=0.0),
    )


def caffe_np(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, np.float32)


# --- contenders: filter patterns ------------------------------------------------------------------


def book_patterns(model: Any, layer: str, size: int, steps: int) -> Callable[[int], np.ndarray]:
    """DLwP listing 5.38 style, one filter at a time, eager: loss = mean(act[..., f]); x += g/rms."""
    extractor = keras.Model(model.inputs, model.get_layer(layer).output)

    def one(f: int, steps: int = steps) -> np.ndarray:
        x = tf.convert_to_tensor(start_image(f, size, 0)[None])
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x)
                activation = extractor(caffe(x))
                loss = tf.reduce_mean(activation[..., f])
            grads = tape.gradient(loss, x)
            grads /= tf.sqrt(tf.reduce_mean(tf.square(grads))) + RMS_EPS
            x = x + grads
        return x.numpy()[0]

    return one


def rms_per_sample(g: Any) -> Any:
    return g / (tf.sqrt(tf.reduce_mean(tf.square(g), axis=(1, 2, 3), keepdims=True)) + RMS_EPS)


def tfkv_patterns(
    model: Any, layer: str, steps: int
) -> Callable[[list[int], np.ndarray], np.ndarray]:
    """tf-keras-vis ActivationMaximization with the book's algorithm.

    regularizers=[] and input_modifiers=[] (no TV/norm penalty, no jitter/rotation); its default
    optimiser RMSprop(1.0, rho=0.999) is replaced by SGD(1.0) with a ``gradient_modifier`` that
    divides each sample's gradient by its RMS + 1e-5 — with its loss being −score this is exactly
    x += g/(rms(g)+1e-5). input_range=(None, None) so the result is not clipped to 0..255.
    """
    from tf_keras_vis.activation_maximization import ActivationMaximization

    extractor = keras.Model(model.inputs, model.get_layer(layer).output)
    pixels = keras.Input((None, None, 3))
    wrapped = keras.Model(pixels, extractor(keras.layers.Lambda(caffe)(pixels)))
    am = ActivationMaximization(wrapped, clone=False)

    def run(filters: list[int], x0: np.ndarray, steps: int = steps) -> np.ndarray:
        idx = tf.constant(filters, tf.int32)

        def score(out: Any) -> Any:  # per sample: mean of its own filter's channel
            return tf.gather(tf.reduce_mean(out, axis=(1, 2)), idx, axis=1, batch_dims=1)

        x = am(
            score,
            seed_input=x0,
            input_range=(None, None),
            input_modifiers=[],
            regularizers=[],
            steps=steps,
            optimizer=keras.optimizers.SGD(learning_rate=1.0),
            gradient_modifier=rms_per_sample,
        )
        return np.asarray(x)

    return run


def rel_diff(a: np.ndarray, b: np.ndarray, x0: np.ndarray) -> float:
    """max |a − b| relative to how far b moved from the start."""
    return float(np.abs(a - b).max() / max(np.abs(b - x0).max(), 1e-12))


# --- section 1 + 3b: filter grid -----------------------------------------------------------------


def bench_grid(
    cfg: Config, lm: LoadedModel, rep: Report, peak: Callable[[], float], tfkv_err: str | None
) -> None:
    log(
        f"\n## 1. Filter grid: {cfg.filters} filters, {cfg.steps} steps, {cfg.size} px, VGG16 (random weights)"
    )
    params = PatternParams(size=cfg.size, steps=cfg.steps, seed=0)
    params_bf = PatternParams(size=cfg.size, steps=cfg.steps, seed=0, precision=BF16)
    filters = list(range(cfg.filters))
    x0_all = np.stack([start_image(f, cfg.size, 0) for f in filters])

    def one_layer(layer: str) -> None:
        k = cfg.subset[layer]
        sub = filters[:k]
        book = book_patterns(lm.model, layer, cfg.size, cfg.steps)
        store: dict[str, Any] = {}
        tasks: dict[str, Callable[[], Any]] = {
            "peak": peak,
            "engine": lambda: store.__setitem__(
                "engine", filter_patterns(lm, layer, filters, params, batch_size=cfg.filters)
            ),
            "engine_bf16": lambda: store.__setitem__(
                "engine_bf16", filter_patterns(lm, layer, filters, params_bf, batch_size=cfg.filters)
            ),
            "book": lambda: store.__setitem__("book", [book(f) for f in sub]),
        }
        # warm-up (tracing/compilation), same shapes as measured
        for precision in ("float32", BF16):
            filter_patterns(
                lm,
                layer,
                filters,
                PatternParams(size=cfg.size, steps=1, seed=0, precision=precision),
                batch_size=cfg.filters,
            )
        book(0, 2)
        tfkv = None
        if tfkv_err is None:
            tfkv = tfkv_patterns(lm.model, layer, cfg.steps)
            tfkv(filters, x0_all, 1)
            tfkv(sub[:1], x0_all[:1], 1)
            tasks["tfkv_batched"] = lambda: store.__setitem__("tfkv_b", tfkv(filters, x0_all))
            tasks["tfkv_single"] = lambda: store.__setitem__(
                "tfkv_s", [tfkv([f], x0_all[f : f + 1])[0] for f in sub]
            )
        t = interleaved(tasks, cfg.repeats)
        n = cfg.filters
        counts = {"engine": n, "engine_bf16": n, "book": k, "tfkv_batched": n, "tfkv_single": k}
        per = {name: [x / c for x in t[name]] for name, c in counts.items() if name in t}
        f_fwd = conv_flops(lm.model, layer, cfg.size)
        work = {f: n * ((cfg.steps + 1) * f + 1) * f_fwd for f in (3, 2)}
        for engine in ("engine", "engine_bf16"):
            rep.gflops[(layer, engine)] = {
                f: [w / sec / 1e9 for sec in t[engine]] for f, w in work.items()
            }
        rep.peaks.extend(t["peak"])
        log(f"\n### {layer}  (F_fwd = {f_fwd / 1e6:.1f} MFLOP/image at {cfg.size} px)")
        for name, c in counts.items():
            if name in t:
                log(
                    f"  {name:<13} {med(per[name]) * 1e3:8.1f} ms/filter  ({c} filters; "
                    f"runs {runs(t[name])} s)"
                )
        for engine in ("engine", "engine_bf16"):
            g = rep.gflops[(layer, engine)]
            log(
                f"  {engine} GFLOP/s (×3 formula): {runs(g[3])} (×2: {runs(g[2])}); "
                f"matmul peak (float32): {runs(t['peak'])}"
            )
        contenders = [("book", f"book loop, per filter (book: {k} of {n})", TARGETS[("grid", layer)])]
        if tfkv_err is None:
            contenders += [
                ("tfkv_batched", f"tf-keras-vis AM batched ({n} filters/call)", TARGETS["am_batched"]),
                ("tfkv_single", f"tf-keras-vis AM 1 filter/call ({k} of {n})", TARGETS["am_single"]),
            ]
        else:
            rep.add(f"grid {layer}", "engine vs tf-keras-vis AM", None, None, note=tfkv_err)
        for engine, label in (("engine", "engine"), ("engine_bf16", "bf16 engine")):
            for other, what, target in contenders:
                med_r, best_r = speedup(per[other], per[engine])
                rep.add(f"grid {layer}", f"{label} vs {what}", med_r, target, best=best_r)
        # agreement: same algorithm, same start image -> same pixels (live filters only)
        eng = {p.filter: p for p in store["engine"]}
        live = [f for f in sub if not eng[f].dead]
        pairs = list(zip(sub, store["book"], strict=True))
        d_book = max(
            (rel_diff(eng[f].raw, b, x0_all[f]) for f, b in pairs if f in live),
            default=float("nan"),
        )
        msg = f"  agreement (max |Δx| / max |x_ref − x0|, {len(live)}/{k} live filters): book {d_book:.1e}"
        if tfkv is not None:
            d_b = max(
                (rel_diff(eng[f].raw, store["tfkv_b"][f], x0_all[f]) for f in live),
                default=float("nan"),
            )
            pairs = list(zip(sub, store["tfkv_s"], strict=True))
            d_s = max(
                (rel_diff(eng[f].raw, x, x0_all[f]) for f, x in pairs if f in live),
                default=float("nan"),
            )
            msg += f", tf-keras-vis batched {d_b:.1e}, single {d_s:.1e}"
        log(msg)
        bf = {p.filter: p for p in store["engine_bf16"]}
        both = [f for f in filters if not eng[f].dead and not bf[f].dead and eng[f].final_activation > 0]
        reached = [bf[f].final_activation / eng[f].final_activation for f in both]
        if reached:
            log(
                f"  bf16 engine: objective reached ÷ float32 engine's, {len(both)} live filters: "
                f"median {med(reached):.3f}, min {min(reached):.3f}, max {max(reached):.3f}; "
                f"dead filters {sum(p.dead for p in bf.values())} (float32: {sum(p.dead for p in eng.values())})"
            )
        dead = sum(p.dead for p in store["engine"])
        if dead:
            log(
                f"  ({dead}/{n} filters dead on the start image: the engine optimises their pre-activation)"
            )

    for layer in cfg.layers:
        one_layer(layer)


# --- section 2 + 3a: Grad-CAM ---------------------------------------------------------------------


def book_gradcam(model: Any, layer: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """DLwP 2nd ed. Grad-CAM, one image at a time, eager: conv model + classifier model, tape."""
    last = model.get_layer(layer)
    conv_model = keras.Model(model.inputs, last.output)
    head_in = keras.Input(last.output.shape[1:])
    x = head_in
    after = False
    for lyr in model.layers:
        if after:
            x = lyr(x)
        after = after or lyr is last
    head = keras.Model(head_in, x)

    def one(img: np.ndarray, cls: int) -> np.ndarray:
        conv_out = conv_model(caffe_np(img.astype(np.float32))[None])
        with tf.GradientTape() as tape:
            tape.watch(conv_out)
            preds = head(conv_out)
            channel = preds[:, cls]
        grads = tape.gradient(channel, conv_out)
        pooled = tf.reduce_mean(grads, axis=(0, 1, 2)).numpy()
        heat = (conv_out.numpy()[0] * pooled).mean(axis=-1)
        heat = np.maximum(heat, 0)
        return heat / heat.max() if heat.max() > 0 else heat

    return one


def photos(n: int, size: int = 224) -> list[np.ndarray]:
    """The bundled sample photos resized to size², cycled (flipped on later cycles) to n images."""
    import cv2

    from convatlas.shared.images.decode import load_image
    from convatlas.shared.samples import sample_photos

    base = [
        cv2.resize(load_image(p), (size, size), interpolation=cv2.INTER_AREA)
        for p in sample_photos()
    ]
    out = []
    for i in range(n):
        img = base[i % len(base)]
        out.append(np.ascontiguousarray(img[:, ::-1]) if (i // len(base)) % 2 else img)
    return out


def bench_gradcam(cfg: Config, lm: LoadedModel, rep: Report, tfkv_err: str | None) -> None:
    b, k = cfg.cam_batch, cfg.cam_book
    log(
        f"\n## 2. Grad-CAM: VGG16 @224 (random weights), {b} sample photos per batch, layer {GRADCAM_LAYER}"
    )
    model = lm.model
    imgs = photos(b)
    classes = [(37 * i + 1) % 1000 for i in range(b)]
    x = np.stack(imgs).astype(np.float32)
    book = book_gradcam(model, GRADCAM_LAYER)
    store: dict[str, Any] = {}
    tasks: dict[str, Callable[[], Any]] = {
        "engine": lambda: store.__setitem__(
            "engine", grad_cam(lm, imgs, classes, GRADCAM_LAYER, batch_size=b)
        ),
        "engine_bf16": lambda: store.__setitem__(
            "engine_bf16", grad_cam(lm, imgs, classes, GRADCAM_LAYER, batch_size=b, precision=BF16)
        ),
        "predict": lambda: store.__setitem__(
            "predict", model.predict(caffe_np(x), batch_size=b, verbose=0)
        ),
        "book": lambda: store.__setitem__("book", [book(imgs[i], classes[i]) for i in range(k)]),
    }
    gc = None
    if tfkv_err is None:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.scores import CategoricalScore

        gc = Gradcam(model, clone=False)
        score = CategoricalScore(classes)
        tasks["tfkv"] = lambda: store.__setitem__(
            "tfkv",
            np.asarray(gc(score, caffe_np(x), penultimate_layer=GRADCAM_LAYER, expand_cam=False)),
        )
    for fn in tasks.values():  # warm-up
        fn()
    t = interleaved(tasks, cfg.repeats)
    per = {n: [s / (k if n == "book" else len(imgs)) for s in v] for n, v in t.items()}
    for n in tasks:
        log(f"  {n:<11} {1 / med(per[n]):7.2f} img/s   (runs {runs(t[n])} s)")
    f_img = conv_flops(model, None, 224)
    log(
        f"  (VGG16 forward = {f_img / 1e9:.1f} GFLOP/image: predict reaches "
        f"{f_img / med(per['predict']) / 1e9:.0f} GFLOP/s)"
    )
    for engine, label in (("engine", "engine"), ("engine_bf16", "bf16 engine")):
        med_r, best_r = speedup(per["book"], per[engine])
        what = f"{label} vs book one-image eager loop ({k} images), img/s"
        rep.add("grad-cam", what, med_r, TARGETS["cam_book"], best=best_r)
        med_r, best_r = speedup(per["predict"], per[engine])
        what = f"{label} img/s ÷ model.predict img/s (batch {b})"
        rep.add("grad-cam", what, med_r, TARGETS["cam_predict"], best=best_r)
        if "tfkv" in per:
            med_r, best_r = speedup(per["tfkv"], per[engine])
            what = f"{label} vs tf-keras-vis Gradcam (batch {b}), img/s"
            rep.add("grad-cam", what, med_r, TARGETS["cam_tfkv"], best=best_r)
    if "tfkv" not in per:
        rep.add("grad-cam", "engine vs tf-keras-vis Gradcam", None, None, note=tfkv_err)
    heat = np.stack([c.heatmap for c in store["engine"]])
    d_book = max(float(np.abs(heat[i] - store["book"][i]).max()) for i in range(k))
    msg = f"  agreement (max |Δheatmap|, maps in 0..1): book {d_book:.1e}"
    if gc is not None:
        msg += f", tf-keras-vis {float(np.abs(heat - store['tfkv']).max()):.1e} (it min-max normalises)"
    log(msg)
    heat_bf = np.stack([c.heatmap for c in store["engine_bf16"]])
    flat = [(a, c) for a, c in zip(heat, heat_bf, strict=True) if a.std() > 0 and c.std() > 0]
    corr = [float(np.corrcoef(a.ravel(), c.ravel())[0, 1]) for a, c in flat]
    same_top = sum(
        a.top[0].index == c.top[0].index for a, c in zip(store["engine"], store["engine_bf16"], strict=True)
    )
    log(
        f"  bf16 engine vs float32 engine: max |Δheatmap| {float(np.abs(heat - heat_bf).max()):.1e}, "
        f"correlation median {med(corr) if corr else float('nan'):.4f} min "
        f"{min(corr) if corr else float('nan'):.4f} ({len(heat) - len(flat)} constant maps left out); "
        f"same top-1 prediction {same_top}/{len(heat)}"
    )


# --- ideas: cheap speed-ups, side by side ---------------------------------------------------------


@contextlib.contextmanager
def xla_functions():  # noqa: ANN201
    """Make ``tf.function`` default to ``jit_compile=True`` while the engine builds its loop."""
    orig = tf.function

    def patched(*a: Any, **k: Any) -> Any:
        k.setdefault("jit_compile", True)
        return orig(*a, **k)

    tf.function = patched
    try:
        yield
    finally:
        tf.function = orig


def bench_ideas(cfg: Config, lm: LoadedModel, rep: Report) -> None:
    steps = cfg.ideas_steps
    n, nx = cfg.filters, cfg.ideas_xla_filters
    log(
        f"\n## Ideas: engine variants vs the engine as it is ({n} filters, {steps} steps, {cfg.size} px)"
    )
    params = PatternParams(size=cfg.size, steps=steps, seed=0)
    filters = list(range(n))

    def one_layer(layer: str) -> None:
        x0 = tf.constant(np.stack([start_image(f, cfg.size, 0) for f in filters]))

        def call(fn: Any, fs: list[int], steps: int = steps) -> Any:
            args = (tf.constant(fs, tf.int32), tf.constant(steps), tf.constant(1.0))
            uniforms = tf.zeros((len(fs), steps, 0))  # the book style draws no transforms
            return fn(x0[: len(fs)], *args, tf.constant(True), uniforms)[0].numpy()

        # (the one-channel target conv and the single conv, measured here before, are now the
        # engine itself: shared/engine/objectives.selected_channels)
        with xla_functions():
            xla = backend.build_ascent(selected_channels(lm.model, layer), lm.preprocess)
        dbl = filters + filters
        tasks = {
            "engine": lambda: filter_patterns(lm, layer, filters, params, batch_size=n),
            "batch_half": lambda: filter_patterns(lm, layer, filters, params, batch_size=n // 2),
            "batch_double": lambda: filter_patterns(lm, layer, dbl, params, batch_size=2 * n),
            f"engine_{nx}": lambda: filter_patterns(lm, layer, filters[:nx], params, batch_size=nx),
            f"xla_{nx}": lambda: call(xla, filters[:nx]),
        }
        # agreement after one step (this also compiles XLA for steps=1)
        one = PatternParams(size=cfg.size, steps=1, seed=0)
        ref = np.stack([p.raw for p in filter_patterns(lm, layer, filters, one, batch_size=n)])
        moved = np.abs(ref - x0.numpy()).max()
        agree = {
            name: float(np.abs(call(fn, fs, 1) - ref[: len(fs)]).max() / moved)
            for name, fn, fs in (
                ("xla", xla, filters[:nx]),
            )
        }
        # warm-up at the measured shapes; XLA compiles again for another step count
        t0 = time.perf_counter()
        tasks[f"xla_{nx}"]()
        xla_compile = time.perf_counter() - t0
        for name, fn in tasks.items():
            if not name.startswith("xla"):
                fn()
        t = interleaved(tasks, cfg.repeats)
        log(
            f"\n### {layer}: XLA first call at {steps} steps (compiles) {xla_compile:.1f} s; agreement "
            + ", ".join(f"{k} {v:.0e}" for k, v in agree.items())
        )
        for name, v in t.items():
            log(f"  {name:<13} runs {runs(v)} s")
        for what, name, ref_name, scale in (
            (f"batch_size {n // 2} (2 calls) instead of {n}", "batch_half", "engine", 1.0),
            (
                f"batch {2 * n} in one call (each filter twice; per filter)",
                "batch_double",
                "engine",
                2.0,
            ),
            (
                f"jit_compile=True (XLA) on the ascent loop, {nx} filters",
                f"xla_{nx}",
                f"engine_{nx}",
                1.0,
            ),
        ):
            var = [x / scale for x in t[name]]
            med_r, best_r = speedup(t[ref_name], var)
            rep.add(f"ideas {layer}", what, med_r, None, best=best_r)

    for layer in cfg.layers:
        one_layer(layer)


# --- machine / versions / RESULTS.md ---------------------------------------------------------------


def tfkv_status() -> str | None:
    try:
        import tf_keras_vis  # noqa: F401
        from tf_keras_vis.activation_maximization import ActivationMaximization  # noqa: F401
        from tf_keras_vis.gradcam import Gradcam  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"tf-keras-vis unavailable: {type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, smoke check")
    ap.add_argument("--ideas", action="store_true", help="only the speed-up experiments")
    ap.add_argument("--write", action="store_true", help="write RESULTS.md also in --quick mode")
    ap.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=["grid", "gradcam"], help="sections to skip"
    )
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    header = machine_lines() + [
        f"command: bench/bench_engine.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip()
    ]
    for line in header:
        log(line)
    lm_convs, lm_full = vgg16_models()
    rep = Report()
    tfkv_err = tfkv_status()
    if args.ideas:
        bench_ideas(cfg, lm_convs, rep)
    else:
        peak = matmul_peak(cfg.matmul_n, cfg.matmul_tries)
        log(
            f"matmul peak: float32 {cfg.matmul_n}×{cfg.matmul_n} tf.linalg.matmul (compiled), best of {cfg.matmul_tries}, measured inside every repeat"
        )
        log(
            f"repeats: {cfg.repeats}, order rotated each repeat; ratios are medians of per-repeat ratios"
        )
        if "grid" not in args.skip:
            bench_grid(cfg, lm_convs, rep, peak, tfkv_err)
        if "gradcam" not in args.skip:
            bench_gradcam(cfg, lm_full, rep, tfkv_err)
    if rep.gflops:
        peak = max(rep.peaks)
        log(
            f"\nmatmul peak (best of all {len(rep.peaks)} measurements in this run): {peak:.0f} GFLOP/s"
        )
        for (layer, engine), g in rep.gflops.items():
            target = TARGETS["peak_deep"] if layer in DEEP and engine == "engine" else None
            label = "engine" if engine == "engine" else "bf16 engine"
            for factor, how in ((3, "×3 formula, as specified"), (2, "×2 = work actually done")):
                gf = g[factor]
                what = f"{label} GFLOP/s ({how}) / fp32 matmul peak"
                rep.add(f"grid {layer}", what, med(gf) / peak, target, best=max(gf) / peak)
    sections = list(dict.fromkeys(r.section for r in rep.rows))
    rep.rows.sort(key=lambda r: sections.index(r.section))
    load1 = os.getloadavg()
    log("\n## Ratios (engine ÷ contender throughput unless stated; medians of per-repeat ratios)\n")
    log(rep.table())
    log(
        f"\nwall time {time.perf_counter() - t_start:.0f} s; load average (1 min) {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end on {os.cpu_count()} cores (other jobs share the machine)"
    )
    if not args.no_write and (not args.quick or args.write):
        write_section(RESULTS, "ideas" if args.ideas else "main", log.lines)
    dump_raw(raw_path("engine-ideas" if args.ideas else "engine-main", args.quick), {
        "header": header, "rows": [vars(r) for r in rep.rows], "peaks": rep.peaks,
        "gflops": {f"{layer} {engine}": g for (layer, engine), g in rep.gflops.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
