"""The engine on the device through convatlas's own code (``CONVATLAS_BACKEND=jax``):

* ``peak``: the device's own matmul rate, measured here (the ceiling the ascent is read against);
* ``ascent``: filter-pattern pages (``engine.patterns.filter_patterns``, the book's loop) at
  block1/3/5, 64 filters and the whole layer per call, float32 and bfloat16: TFLOP/s achieved
  and its share of the same precision's peak;
* ``cams``: Grad-CAM photos/s (``engine.cam_runner.cams``) for EfficientNet-Lite0 and a VGG16
  with random weights at several batches, with the forward-only rate of the same network,
  precision and batch beside it.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from common import PartLog, Sizes, median_seconds, read_part
from measure import conv_flops
from prep import VGG_NOTOP, VGG_TOP, model_name


def _same(x: Any) -> Any:
    return x


def _sync(x: Any) -> Any:
    import jax

    return jax.block_until_ready(x)


def peak(out: Path, sz: Sizes) -> None:
    """n³ matmuls, two input sets in turn (no cache-resident repeats), random data (never zeros)."""
    import jax
    import jax.numpy as jnp

    log = PartLog(out, "peak")
    dev = jax.devices()[0]
    log.set(device=f"{dev.platform}:{dev.id} {dev.device_kind}", jax=jax.__version__)
    n = sz.matmul_n
    for name, dtype, precision in (("bfloat16", jnp.bfloat16, None),
                                   ("float32", jnp.float32, None),  # XLA's default: TF32 on GPUs
                                   ("float32_highest", jnp.float32, jax.lax.Precision.HIGHEST)):
        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        sets = [(jax.random.normal(keys[2 * i], (n, n), dtype),
                 jax.random.normal(keys[2 * i + 1], (n, n), dtype)) for i in range(2)]
        mm = jax.jit(lambda a, b, p=precision: jnp.matmul(a, b, precision=p))
        turn = [0]

        def call(mm: Any = mm, sets: list[Any] = sets, turn: list[int] = turn) -> Any:
            turn[0] ^= 1
            return mm(*sets[turn[0]])

        secs, reps = median_seconds(call, _sync, warmup=3, reps=10, max_seconds=8)
        log.row(dtype=name, n=n, seconds=secs, reps=reps, tflops=2 * n**3 / secs / 1e12)


def ascent(out: Path, sz: Sizes) -> None:
    """Whole-layer bf16 first (the target's figure), so a time box cuts the least useful rows."""
    from convatlas.shared.engine.patterns import PatternParams, filter_patterns
    from convatlas.shared.models.registry import get_model

    log = PartLog(out, "engine")
    peaks = {r["dtype"]: r["tflops"] for r in read_part(out, "peak").get("rows", [])}
    t0 = time.perf_counter()
    lm = get_model(model_name(out, VGG_NOTOP))
    log.set(model="VGG16 (random weights, no top)", load_seconds=time.perf_counter() - t0,
            flops_rule="per filter-step: 2 x forward conv FLOPs up to the layer (forward + "
                       "input gradient; no weight gradients); +1 gradient and 1 forward pass")
    model = lm.model
    configs = [(layer, batch, precision)
               for batch in sz.ascent_batches for layer in sz.ascent_layers
               for precision in ("bfloat16", "float32")]
    for layer, batch, precision in configs:
        channels = model.get_layer(layer).filters
        n = channels if batch is None else min(batch, channels)
        params = PatternParams(size=sz.ascent_size, steps=sz.ascent_steps, precision=precision)
        filters = list(range(n))
        try:
            t1 = time.perf_counter()
            filter_patterns(lm, layer, filters, params, batch_size=n)  # compiles
            first = time.perf_counter() - t1
            secs, reps = median_seconds(
                partial(filter_patterns, lm, layer, filters, params, batch_size=n), _same,
                warmup=0, reps=3, max_seconds=6)
        except Exception as exc:  # one shape failing (memory) must not stop the others
            log.row(layer=layer, filters=n, precision=precision, error=repr(exc)[:300])
            continue
        fwd = conv_flops(model, layer, sz.ascent_size)  # bench/measure.py
        flops = n * fwd * (2 * (sz.ascent_steps + 1) + 1)
        tflops = flops / secs / 1e12
        ref = peaks.get(precision)
        log.row(layer=layer, filters=n, whole_layer=batch is None, precision=precision,
                steps=sz.ascent_steps, size=sz.ascent_size, first_call_s=first, seconds=secs,
                reps=reps, tflops=tflops, of_peak=tflops / ref if ref else None,
                filters_per_s=n / secs)


def _forward_fn(lm: Any, precision: str) -> Any:
    """The network's forward pass alone (preprocessing included), compiled, weights as arguments."""
    import jax

    model = lm.at_precision(precision)
    preprocess = lm.preprocess

    @jax.jit
    def fwd(tv: Any, ntv: Any, x: Any) -> Any:
        y, _ = model.stateless_call(tv, ntv, preprocess(x), training=False)
        return y

    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    return lambda x: fwd(tv, ntv, x)


def cams(out: Path, sz: Sizes) -> None:
    from convatlas.shared.engine.cam_runner import cams as run_cams
    from convatlas.shared.engine.cam_runner import input_size
    from convatlas.shared.models.registry import get_model

    log = PartLog(out, "cams")
    rng = np.random.default_rng(0)
    for label, name in (("efficientnet-lite0", "efficientnet-lite0"),
                        ("vgg16-sized (random weights)", model_name(out, VGG_TOP))):
        try:
            lm = get_model(name)
        except Exception as exc:
            log.row(model=label, error=repr(exc)[:300])
            continue
        side = input_size(lm)
        for batch in sz.cam_batches:
            photos = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(batch)]
            x = np.stack(photos).astype(np.float32)  # host memory: the transfer counts
            precision = "float32"
            try:
                t1 = time.perf_counter()
                run_cams(lm, photos, None, None, "gradcam", batch_size=batch, precision=precision)
                first = time.perf_counter() - t1
                cam_s, reps = median_seconds(
                    partial(run_cams, lm, photos, None, None, "gradcam", batch_size=batch,
                            precision=precision), _same,
                    warmup=0, reps=3, max_seconds=6)
                fwd = _forward_fn(lm, precision)
                fwd_s, _ = median_seconds(partial(fwd, x), _sync, warmup=1, reps=5, max_seconds=4)
            except Exception as exc:  # memory at the largest batch: keep the others
                log.row(model=label, batch=batch, error=repr(exc)[:300])
                continue
            log.row(model=label, batch=batch, precision=precision, first_call_s=first,
                    gradcam_photos_per_s=batch / cam_s, forward_photos_per_s=batch / fwd_s,
                    gradcam_over_forward=fwd_s / cam_s,
                    note="gradcam: the public cams() call (host resize, maps to NumPy); "
                         "forward: the compiled forward pass from a host batch")
