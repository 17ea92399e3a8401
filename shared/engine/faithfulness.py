"""Faithfulness metrics of CAM heatmaps: deletion, insertion, ROAD, Average Drop / Increase.

Each metric perturbs the photo according to its heatmap and runs the classifier on the perturbed
inputs, batched (``pass_batch`` passes at a time, many photos and methods mixed in one batch).
Names: :data:`METRICS` = ``deletion``, ``insertion``, ``road``, ``avgdrop``, one module each in
``convatlas.shared.engine.metrics`` (the registry); this module runs the asked ones for a batch.

Protocol (all of it; the defaults are :data:`PROTOCOL`, recorded by ``Protocol.describe()``)
------------------------------------------------------------------------------------------------
Common
    The photo is resized to the classifier's input as for the CAMs (``cam_runner.model_input``,
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

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from convatlas.shared.engine.cam_runner import model_input, scored_passes
from convatlas.shared.engine.metrics import (
    BASELINES,
    PROTOCOL,
    REGISTRY,
    BlendMetric,
    PassesMetric,
    Protocol,
)
from convatlas.shared.engine.metrics.base import DELETE, IDENTITY, INSERT, blend, blend_ks
from convatlas.shared.engine.metrics.road import linear_impute, pyramid_levels
from convatlas.shared.engine.precision import check_precision
from convatlas.shared.metrics_summary import METRICS, SCALARS, check_metrics, summarise
from convatlas.shared.models.registry import LoadedModel

__all__ = ["BASELINES", "METRICS", "PROTOCOL", "SCALARS", "Protocol", "check_metrics",
           "faithfulness", "linear_impute", "passes_per_photo", "pyramid_levels", "summarise"]


def passes_per_photo(metrics: str | Sequence[str], protocol: Protocol = PROTOCOL) -> int:
    """Forward passes one (photo, heatmap) costs for ``metrics`` (the unperturbed one included)."""
    return 1 + sum(REGISTRY[m].passes(protocol) for m in check_metrics(metrics))


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
    chosen = [REGISTRY[m] for m in REGISTRY if m in names]  # registry order: the passes' order
    blends = [m for m in chosen if isinstance(m, BlendMetric)]
    steps_k = blend_ks(protocol.steps, size * size)

    # blend passes, per photo: the unperturbed input, then each blend metric's passes
    modes: list[tuple[int, int, float]] = []  # (image, mode, k)
    for j in range(n):
        modes.append((j, IDENTITY, 0.0))
        for m in blends:
            modes += [(j, m.mode, k) for k in m.ks(steps_k)]
    plan = np.array(modes, np.float64)
    bases: dict[int, np.ndarray] = {}  # mode → the baseline its passes blend towards
    for m in blends:
        kind = m.baseline(protocol)
        if kind is not None:
            bases[m.mode] = _baseline(lm, x, kind, protocol)
    zeros = np.zeros_like(x)
    base_del, base_ins = bases.get(DELETE, zeros), bases.get(INSERT, zeros)
    rank = np.stack([_ranks(h[..., 0]) for h in heat])[..., None]
    _, probs = scored_passes(
        lm, "faithfulness-blend", blend, x, cls, plan[:, 0].astype(np.int32),
        per_image=(rank, heat, base_del, base_ins),
        per_pass=(plan[:, 1].astype(np.int32), plan[:, 2].astype(np.float32)),
        pass_batch=pass_batch, precision=precision,
    )
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    cursor = 0
    for j in range(n):
        p = float(probs[cursor])
        cursor += 1
        results[j]["probability"] = p
        for m in blends:
            count = len(m.ks(steps_k))
            results[j].update(m.read(p, probs[cursor : cursor + count]))
            cursor += count

    probability = [r["probability"] for r in results]
    for metric in chosen:
        if isinstance(metric, PassesMetric):
            figures = metric.compute(lm, x, cls, heat, probability, protocol, pass_batch, precision)
            for r, f in zip(results, figures, strict=True):
                r.update(f)
    return results
