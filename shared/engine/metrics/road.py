"""ROAD (Rong et al., ICML 2022; pytorch-grad-cam's ``ROADCombined``): the confidence change when
the most (MoRF) or least (LeRF) relevant pixels are removed and filled by ROAD's noisy linear
imputation, per percentile; ``road = mean_q (LeRF_q − MoRF_q) / 2`` (higher is better).

The imputation (:func:`linear_impute`) solves, for the removed pixels, each pixel = the weighted
mean of its in-image 8 neighbours, by cascadic preconditioned conjugate gradients, compiled whole
by XLA (``backend.cam_builders().jit``). The protocol is ``faithfulness``'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convatlas.shared.engine.metrics.base import PassesMetric, SummaryField
from convatlas.shared.engine.metrics.protocol import Protocol


def _neighbours(z: Any) -> Any:
    """ROAD's weighted sum of each pixel's in-image neighbours (zero outside), per channel.

    The 3×3 kernel (1/12 diagonal, 1/6 direct) is ``(outer([1,2,1], [1,2,1]) − 4·δ) / 12``: two
    shifted sums, which XLA fuses (several times faster than a depthwise convolution here).
    """
    from keras import ops

    p = ops.pad(z, [[0, 0], [1, 1], [1, 1], [0, 0]])
    rows = p[:, :, :-2] + 2.0 * p[:, :, 1:-1] + p[:, :, 2:]
    full = rows[:, :-2] + 2.0 * rows[:, 1:-1] + rows[:, 2:]
    return (full - 4.0 * z) / 12.0


def _pcg(known: Any, remove: Any, u: Any, iterations: int) -> Any:
    """Solve ROAD's system for the removed pixels by Jacobi-preconditioned CG from ``u``.

    At a removed pixel ``p``: ``d_p z_p − Σ_n w_n z_n = 0`` with ``d_p = Σ_{n in image} w_n``:
    symmetric positive definite on the removed pixels (each channel and image apart).
    """
    from keras import ops

    d = _neighbours(ops.ones_like(remove))

    def apply(v: Any) -> Any:
        return remove * (d * v - _neighbours(v))

    def safe_div(a: Any, b: Any) -> Any:
        return ops.where(b > 0, a / ops.where(b > 0, b, ops.ones_like(b)), ops.zeros_like(a))

    b = remove * _neighbours(known)
    u = remove * u
    r = b - apply(u)
    z = r / d
    rz = ops.sum(r * z, axis=(1, 2), keepdims=True)

    def body(_: Any, state: Any) -> Any:
        u, r, p, rz = state
        ap = apply(p)
        alpha = safe_div(rz, ops.sum(p * ap, axis=(1, 2), keepdims=True))
        u = u + alpha * p
        r = r - alpha * ap
        z = r / d
        rz_new = ops.sum(r * z, axis=(1, 2), keepdims=True)
        return u, r, z + safe_div(rz_new, rz) * p, rz_new

    return ops.fori_loop(0, iterations, body, (u, r, z, rz))[0]


def pyramid_levels(size: int) -> int:
    """Coarser levels of the imputation's pyramid for a ``size``-pixel side (down to ≥ 8 px)."""
    levels = 0
    while size >= 16:
        size = (size + 1) // 2
        levels += 1
    return levels


def linear_impute(
    x: Any, remove: Any, iterations: int = 128, coarse_iterations: int = 32,
    levels: int | None = None,
) -> Any:
    """ROAD's linear imputation (no noise) of the pixels where ``remove`` (N,H,W,1) is 1.

    Cascadic: the problem is restricted to a 2× pyramid of ``levels`` coarser levels (default
    from the static image size; a coarse pixel is known when any of its fine pixels is, with
    their mean), solved coarsest first, and each solution, resized bilinearly, starts the next
    finer level's conjugate gradients.
    """
    from keras import ops

    if levels is None:
        levels = pyramid_levels(int(min(x.shape[1:3])))
    pyramid = [(x * (1.0 - remove), remove)]
    for _ in range(levels):
        known, rm = pyramid[-1]
        kept = ops.average_pool(1.0 - rm, 2, 2, padding="same")
        total = ops.average_pool(known, 2, 2, padding="same")
        safe = ops.where(kept > 0, kept, ops.ones_like(kept))
        coarse_rm = ops.cast(kept == 0, x.dtype)
        pyramid.append((ops.where(kept > 0, total / safe, 0.0), coarse_rm))
    u = ops.zeros_like(pyramid[-1][0])
    for level in range(len(pyramid) - 1, -1, -1):
        known, rm = pyramid[level]
        if level != len(pyramid) - 1:
            u = ops.image.resize(u, ops.shape(known)[1:3], interpolation="bilinear")
        u = known + rm * _pcg(known, rm, u, iterations if level == 0 else coarse_iterations)
    return u


def _road_perturb(protocol: Protocol, size: int) -> Any:
    from convatlas.shared.engine.backend import cam_builders

    levels = pyramid_levels(size)

    def impute(x: Any, remove: Any) -> Any:
        return linear_impute(x, remove, protocol.road_iterations,
                             protocol.road_coarse_iterations, levels)

    impute = cam_builders().jit(impute)  # compiled whole (XLA): the CG loop's ops fused

    def perturb(x: Any, per_image: tuple[Any, ...], per_pass: tuple[Any, ...],
                shared: tuple[Any, ...]) -> Any:
        from keras import ops

        (heat,) = per_image
        thr, morf, noise_index = per_pass
        (bank,) = shared
        thr = ops.reshape(thr, (-1, 1, 1, 1))
        morf = ops.reshape(morf, (-1, 1, 1, 1)) > 0
        remove = ops.cast(ops.where(morf, heat >= thr, (1.0 - heat) >= thr), x.dtype)
        filled = impute(x, remove)
        noise = ops.take(bank, noise_index, axis=0)
        return filled + remove * protocol.road_noise * noise

    return perturb


@dataclass(frozen=True)
class Road(PassesMetric):
    name = "road"
    help = "ROAD, MoRF/LeRF 10..90 %"
    reference = "Rong et al., ROAD, ICML 2022"
    summary = (SummaryField("road", "ROAD"),)

    def passes(self, protocol: Protocol) -> int:
        return 2 * len(protocol.road_percentiles)

    def compute(
        self, lm: Any, x: np.ndarray, cls: np.ndarray, heat: np.ndarray,
        probability: Sequence[float], protocol: Protocol, pass_batch: int, precision: str,
    ) -> list[dict[str, Any]]:
        from convatlas.shared.engine.cam_runner import scored_passes

        n, size = len(x), x.shape[1]
        qs = protocol.road_percentiles
        image, thr, morf, noise_index = [], [], [], []
        for j in range(n):
            h = heat[j, ..., 0]
            for m, values in ((1.0, h), (0.0, 1.0 - h)):
                for qi, q in enumerate(qs):
                    image.append(j)
                    thr.append(float(np.percentile(values, q)))
                    morf.append(m)
                    noise_index.append((0 if m else len(qs)) + qi)
        rng = np.random.default_rng(protocol.road_seed)
        bank = rng.standard_normal((2 * len(qs), size, size, x.shape[-1])).astype(np.float32)
        _, road_probs = scored_passes(
            lm, ("faithfulness-road", protocol, size), _road_perturb(protocol, size), x, cls,
            np.array(image, np.int32), per_image=(heat,),
            per_pass=(np.array(thr, np.float32), np.array(morf, np.float32),
                      np.array(noise_index, np.int32)),
            shared=(bank,), pass_batch=pass_batch, precision=precision,
        )
        per = road_probs.reshape(n, 2, len(qs))
        out = []
        for j in range(n):
            p = probability[j]
            morf_d, lerf_d = per[j, 0] - p, per[j, 1] - p
            out.append({"road_morf": [float(v) for v in morf_d],
                        "road_lerf": [float(v) for v in lerf_d],
                        "road": float(np.mean((lerf_d - morf_d) / 2))})
        return out
