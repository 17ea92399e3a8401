"""Faithfulness metrics of CAM heatmaps: deletion, insertion, ROAD, Average Drop / Increase.

Each metric perturbs the photo according to its heatmap and runs the classifier on the perturbed
inputs, batched (``pass_batch`` passes at a time, many photos and methods mixed in one batch).
Names: :data:`METRICS` = ``deletion``, ``insertion``, ``road``, ``avgdrop``.

Protocol (all of it; the defaults are :data:`PROTOCOL`, recorded by ``Protocol.describe()``)
------------------------------------------------------------------------------------------------
Common
    The photo is resized to the classifier's input as for the CAMs (``gradcam.model_input``,
    224×224 for the built-ins); perturbations act on the *preprocessed* input (the tensor the
    network sees, as pytorch-grad-cam and torch-cam perturb normalised tensors), so "zero" means
    the preprocessing's zero: the ImageNet mean colour (``caffe``, ``torch``), grey 127 / 127.5
    (``efficientnet-lite``, ``tf``). The heatmap (h×w, in [0, 1]) is resized bilinearly
    (half-pixel centres, ``cv2.INTER_LINEAR``) to the input size. The score is the softmax
    probability of the heatmap's class (``p``), as ``ClassifierOutputSoftmaxTarget`` and torch-cam's
    ``partial(torch.softmax, dim=-1)``; ``probability`` records ``p`` on the unperturbed input.

``deletion`` / ``insertion`` (Petsiuk et al., RISE, BMVC 2018)
    Pixels are ranked by the resized heatmap, highest first (ties: raster order, a stable sort).
    Step ``t = 0..steps`` (default 20 steps, 5 % of the pixels each) uses the top
    ``k_t = round(t·H·W/steps)`` pixels: deletion replaces them by the deletion baseline,
    insertion shows them over the insertion baseline. Baselines: ``mean`` (the preprocessing's
    zero, i.e. a mean-colour image; deletion's default) or ``blur`` (``cv2.GaussianBlur`` of the
    input pixels, 11×11 kernel, σ = 5, reflected borders — RISE's kernel size and σ, normalised;
    insertion's default). Curves have ``steps + 1`` probabilities; the AUC is the trapezoid rule
    over the removed/inserted fraction in [0, 1] (so an AUC lies in [0, 1]). Lower deletion AUC
    and higher insertion AUC are better. Cost: ``steps`` passes each (the full image is shared).

``road`` (Rong et al., ICML 2022; pytorch-grad-cam's ``ROADCombined``)
    For each percentile ``q`` in (10, 20, ..., 90): MoRF removes the pixels whose resized heatmap
    value is ≥ its ``q``-th percentile (``numpy.percentile``, linear), i.e. keeps the ``q`` % least
    relevant; LeRF does the same with ``1 − heatmap``. Removed pixels are filled by ROAD's noisy
    linear imputation: each equals the weighted mean of its in-image 8 neighbours (weights 1/6
    for the 4 direct ones, 1/12 for the diagonals; neighbours that are removed too are unknowns
    of the same linear system), then Gaussian noise σ = 0.01 (in preprocessed units) is added to
    the removed pixels. The noise is fixed per (MoRF/LeRF, percentile) by ``road_seed``, so a
    photo's figure does not depend on its batch. The system is solved iteratively (cascadic
    preconditioned conjugate gradients: coarse-to-fine over a 2× image pyramid,
    ``road_iterations`` on the full image, ``road_coarse_iterations`` on each coarser level);
    with the defaults (128 / 32) its maximum deviation from the exact sparse solution was
    ≤ 1.2e-3 of the image's range on 224-px tests (10–90 % removed), below the noise. The loop
    is compiled whole by XLA (``backend.cam_builders().jit``); it is still the costly part of
    ROAD, several times the 18 network passes themselves. Each value is the confidence change ``p(perturbed) − p``; ``road_morf`` /
    ``road_lerf`` list them per percentile and ``road = mean_q (LeRF_q − MoRF_q) / 2``
    (higher is better). Cost: 18 passes plus the imputation.

``avgdrop`` (Chattopadhay et al., Grad-CAM++, WACV 2018; torch-cam's ``ClassificationMetric``)
    The input times the resized heatmap (element-wise, in preprocessed space, as torch-cam and
    pytorch-grad-cam's ``CamMultImageConfidenceChange``) gives ``masked_probability`` ``p_m``;
    ``avg_drop = max(0, p − p_m) / p`` and ``conf_increase = p_m > p`` per photo. Over a run,
    Average Drop is the mean of ``avg_drop`` and Increase in Confidence the mean of
    ``conf_increase`` (fractions: × 100 for the papers' percentages). Cost: 1 pass.

Every photo also costs one unperturbed pass (``probability``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from convatlas.shared.engine.cam_runner import model_input, scored_passes
from convatlas.shared.engine.precision import check_precision
from convatlas.shared.metrics_summary import METRICS, SCALARS, check_metrics, summarise
from convatlas.shared.models.registry import LoadedModel

__all__ = ["BASELINES", "METRICS", "PROTOCOL", "SCALARS", "Protocol", "check_metrics",
           "faithfulness", "linear_impute", "passes_per_photo", "pyramid_levels", "summarise"]
BASELINES = ("mean", "blur")

_IDENTITY, _DELETE, _INSERT, _MULTIPLY = 0, 1, 2, 3


@dataclass(frozen=True)
class Protocol:
    """The metrics' settings (module docstring); ``describe()`` is what a record should keep."""

    steps: int = 20
    deletion_baseline: str = "mean"
    insertion_baseline: str = "blur"
    blur_kernel: int = 11
    blur_sigma: float = 5.0
    road_percentiles: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    road_noise: float = 0.01
    road_seed: int = 0
    road_iterations: int = 128
    road_coarse_iterations: int = 32

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        for b in (self.deletion_baseline, self.insertion_baseline):
            if b not in BASELINES:
                raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {b!r}")
        if not all(0 < q < 100 for q in self.road_percentiles) or not self.road_percentiles:
            raise ValueError(f"road percentiles must lie in (0, 100): {self.road_percentiles}")

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["road_percentiles"] = list(self.road_percentiles)
        return d

    def digest(self) -> str:
        """8 hex digits of the settings, for result keys: a change of protocol (steps, baselines,
        percentiles…) gives new keys, so figures made under another protocol are never reused."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]


PROTOCOL = Protocol()


def passes_per_photo(metrics: str | Sequence[str], protocol: Protocol = PROTOCOL) -> int:
    """Forward passes one (photo, heatmap) costs for ``metrics`` (the unperturbed one included)."""
    cost = {"deletion": protocol.steps, "insertion": protocol.steps,
            "road": 2 * len(protocol.road_percentiles), "avgdrop": 1}
    return 1 + sum(cost[m] for m in check_metrics(metrics))


# --- perturbations (keras.ops, compiled with the network) ---------------------------------------


def _blend(x: Any, per_image: tuple[Any, ...], per_pass: tuple[Any, ...], _shared: Any) -> Any:
    """Identity, deletion, insertion or multiplication by the heatmap, chosen per pass."""
    from keras import ops

    rank, heat, base_del, base_ins = per_image
    mode, k = per_pass
    mode = ops.reshape(mode, (-1, 1, 1, 1))
    k = ops.reshape(k, (-1, 1, 1, 1))
    one = ops.ones_like(heat)
    keep = ops.where(mode == _DELETE, ops.cast(rank >= k, x.dtype), one)
    keep = ops.where(mode == _INSERT, ops.cast(rank < k, x.dtype), keep)
    keep = ops.where(mode == _MULTIPLY, heat, keep)
    base = ops.where(mode == _DELETE, base_del, ops.where(mode == _INSERT, base_ins, 0.0))
    return keep * x + (1.0 - keep) * base


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


# --- host side ------------------------------------------------------------------------------------


def _resized(heat: np.ndarray, size: int) -> np.ndarray:
    up = cv2.resize(np.asarray(heat, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(up, 0.0, 1.0)


def _ranks(sal: np.ndarray) -> np.ndarray:
    order = np.argsort(-sal.ravel(), kind="stable")
    rank = np.empty(order.size, np.float32)
    rank[order] = np.arange(order.size, dtype=np.float32)
    return rank.reshape(sal.shape)


def _baseline(lm: LoadedModel, x: np.ndarray, kind: str, protocol: Protocol) -> np.ndarray:
    if kind == "mean":
        return np.zeros_like(x)
    k = protocol.blur_kernel
    blurred = np.stack([cv2.GaussianBlur(im, (k, k), protocol.blur_sigma) for im in x])
    return np.asarray(lm.preprocess(blurred), np.float32)


def _auc(curve: np.ndarray) -> float:
    return float((curve[:-1] + curve[1:]).sum() / (2 * (len(curve) - 1)))


def faithfulness(
    lm: LoadedModel,
    images: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray],
    class_indices: Sequence[int],
    metrics: str | Sequence[str] = METRICS,
    precision: str = "float32",
    batch_size: int = 16,
    pass_batch: int = 32,
    protocol: Protocol = PROTOCOL,
) -> list[dict[str, Any]]:
    """The requested metrics for each (photo, heatmap, class), in order.

    ``images`` are RGB uint8 photos (any size; the same photo may appear once per method),
    ``heatmaps`` their CAMs (h×w in [0, 1], e.g. ``Cam.heatmap``), ``class_indices`` the class
    each heatmap explains (``Cam.class_index``). ``batch_size`` photos are perturbed together,
    their passes run ``pass_batch`` at a time. Returns per photo a dict with ``probability`` and,
    per metric: ``deletion_auc``, ``deletion_curve``; ``insertion_auc``, ``insertion_curve``;
    ``road``, ``road_morf``, ``road_lerf``; ``avg_drop``, ``conf_increase``,
    ``masked_probability`` (curves and per-percentile values as lists of floats).
    """
    names = check_metrics(metrics)
    precision = check_precision(precision)
    if not len(images) == len(heatmaps) == len(class_indices):
        raise ValueError("images, heatmaps and class_indices must have the same length")
    out: list[dict[str, Any]] = []
    for i in range(0, len(images), batch_size):
        out.extend(_batch(lm, images[i : i + batch_size], heatmaps[i : i + batch_size],
                          class_indices[i : i + batch_size], names, precision, pass_batch,
                          protocol))
    return out


def _batch(
    lm: LoadedModel,
    images: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray],
    classes: Sequence[int],
    names: tuple[str, ...],
    precision: str,
    pass_batch: int,
    protocol: Protocol,
) -> list[dict[str, Any]]:
    x = np.stack([model_input(lm, im) for im in images])
    n, size = len(x), x.shape[1]
    cls = np.asarray(classes, np.int32)
    heat = np.stack([_resized(h, size) for h in heatmaps])[..., None]  # (N,H,W,1)
    steps, pixels = protocol.steps, size * size
    ks = np.array([round(t * pixels / steps) for t in range(steps + 1)], np.float32)

    # blend passes: the unperturbed input, deletion t=1..S, insertion t=0..S-1, heatmap × input
    modes: list[tuple[int, int, float]] = []  # (image, mode, k)
    for j in range(n):
        modes.append((j, _IDENTITY, 0.0))
        if "deletion" in names:
            modes += [(j, _DELETE, float(k)) for k in ks[1:]]
        if "insertion" in names:
            modes += [(j, _INSERT, float(k)) for k in ks[:-1]]
        if "avgdrop" in names:
            modes.append((j, _MULTIPLY, 0.0))
    plan = np.array(modes, np.float64)
    zeros = np.zeros_like(x)
    base_del = _baseline(lm, x, protocol.deletion_baseline, protocol) if "deletion" in names else zeros
    base_ins = _baseline(lm, x, protocol.insertion_baseline, protocol) if "insertion" in names else zeros
    rank = np.stack([_ranks(h[..., 0]) for h in heat])[..., None]
    _, probs = scored_passes(
        lm, "faithfulness-blend", _blend, x, cls, plan[:, 0].astype(np.int32),
        per_image=(rank, heat, base_del, base_ins),
        per_pass=(plan[:, 1].astype(np.int32), plan[:, 2].astype(np.float32)),
        pass_batch=pass_batch, precision=precision,
    )
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    cursor = 0
    for j in range(n):
        p = float(probs[cursor])
        cursor += 1
        r = results[j]
        r["probability"] = p
        if "deletion" in names:
            curve = np.concatenate([[p], probs[cursor : cursor + steps]])
            cursor += steps
            r["deletion_auc"], r["deletion_curve"] = _auc(curve), [float(v) for v in curve]
        if "insertion" in names:
            curve = np.concatenate([probs[cursor : cursor + steps], [p]])
            cursor += steps
            r["insertion_auc"], r["insertion_curve"] = _auc(curve), [float(v) for v in curve]
        if "avgdrop" in names:
            pm = float(probs[cursor])
            cursor += 1
            r["avg_drop"] = max(0.0, p - pm) / (p + 1e-7)  # torch-cam's guard against p = 0
            r["conf_increase"] = bool(pm > p)
            r["masked_probability"] = pm

    if "road" in names:
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
        for j in range(n):
            p = results[j]["probability"]
            morf_d, lerf_d = per[j, 0] - p, per[j, 1] - p
            results[j]["road_morf"] = [float(v) for v in morf_d]
            results[j]["road_lerf"] = [float(v) for v in lerf_d]
            results[j]["road"] = float(np.mean((lerf_d - morf_d) / 2))
    return results
