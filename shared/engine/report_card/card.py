"""The report card's job: every CAM method at each candidate layer on a photo sample, scored by
deletion, insertion and ROAD, checked against the sanity baselines and by model randomisation,
then ranked (``ranking``). Local mode calls :func:`compute_card` in-process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convatlas.shared.engine.cam_runner import cams, model_input, target_layer
from convatlas.shared.engine.cams import DEFAULT_MAX_CHANNELS, check_methods
from convatlas.shared.engine.faithfulness import PROTOCOL, Protocol, faithfulness
from convatlas.shared.engine.report_card.baselines import BASELINES, ImageMethod
from convatlas.shared.engine.report_card.randomisation import (
    RANDOMISATION,
    Randomisation,
    randomised_layers,
    randomised_model,
    rank_correlation,
)
from convatlas.shared.engine.report_card.ranking import RULE, ranked, recommend
from convatlas.shared.models.registry import LoadedModel

CARD_METRICS = ("deletion", "insertion", "road")
INPUT_LAYER = "input"  # the "layer" of the baselines: they are made from the photo itself
Photo = tuple[str, str, np.ndarray]  # (name, sha256, RGB uint8 image)


def candidate_layers(lm: LoadedModel, earlier: int = 2) -> list[str]:
    """The default Grad-CAM layer, then the ends of the ``earlier`` stages before it.

    A stage is a run of 4-D feature maps at one spatial resolution; its end is the last such
    layer (pooling layers left out) in the graph's order. Stages at the default layer's
    resolution or coarser are skipped; the finer ones are taken from the coarsest up."""
    default = target_layer(lm, None)
    ends: dict[int, str] = {}
    for layer in lm.model.layers:
        shape = getattr(getattr(layer, "output", None), "shape", None)
        kind = type(layer).__name__
        if shape is None or len(shape) != 4 or kind == "InputLayer" or "Pooling" in kind:
            continue
        if shape[1] is not None:
            ends[int(shape[1])] = layer.name
    side = lm.model.get_layer(default).output.shape[1]
    finer = sorted(r for r in ends if side is not None and r > side)
    return [default] + [ends[r] for r in finer[:earlier] if ends[r] != default]


def _mean(values: Sequence[Any]) -> Any:
    return np.mean(np.asarray(values, np.float64), axis=0)


def _row(method: str, layer: str, baseline: bool, figures: list[dict[str, Any]],
         correlations: list[float], threshold: float) -> dict[str, Any]:
    rho = float(np.mean(correlations))
    return {
        "method": method, "layer": layer, "baseline": baseline, "photos": len(figures),
        "deletion_auc": float(_mean([f["deletion_auc"] for f in figures])),
        "insertion_auc": float(_mean([f["insertion_auc"] for f in figures])),
        "road": float(_mean([f["road"] for f in figures])),
        "deletion_curve": [float(v) for v in _mean([f["deletion_curve"] for f in figures])],
        "insertion_curve": [float(v) for v in _mean([f["insertion_curve"] for f in figures])],
        "randomised_spearman": rho,
        "flagged": rho > threshold,
    }


def photo_entries(
    lm: LoadedModel,
    photos: Sequence[Photo],
    methods: str | Sequence[str],
    layers: Sequence[str],
    protocol: Protocol = PROTOCOL,
    randomisation: Randomisation = RANDOMISATION,
    baselines: Sequence[ImageMethod] = tuple(BASELINES.values()),
    precision: str = "float32",
    batch_size: int = 16,
    pass_batch: int = 32,
    scorecam_channels: int | None = DEFAULT_MAX_CHANNELS,
) -> list[dict[str, Any]]:
    """The per-photo half of the card (what a fleet job computes for its photos): per photo its
    class and, per (method, layer) and baseline, the faithfulness figures and the rank
    correlation with the randomised model's map (JSON-ready). :func:`assemble_card` averages."""
    names = check_methods(methods)
    images = [p[2] for p in photos]
    if not images:
        raise ValueError("the report card needs at least one photo")
    rlm, _ = randomised_model(lm, randomisation)
    maps: dict[tuple[str, str, bool], list[np.ndarray]] = {}
    rho: dict[tuple[str, str, bool], list[float]] = {}
    classes: list[int] = []
    for layer in layers:
        kw = {"layer": layer, "methods": names, "batch_size": batch_size, "precision": precision,
              "scorecam_channels": scorecam_channels}
        real = cams(lm, images, classes or None, **kw)  # type: ignore[arg-type]
        classes = classes or [r[names[0]].class_index for r in real]
        rand = cams(rlm, images, classes, **kw)  # type: ignore[arg-type]
        for m in names:
            key = (m, layer, False)
            maps[key] = [r[m].heatmap for r in real]
            rho[key] = [rank_correlation(a[m].heatmap, b[m].heatmap)
                        for a, b in zip(real, rand, strict=True)]
    inputs = [model_input(lm, im) for im in images]
    for b in baselines:
        key = (b.name, INPUT_LAYER, True)
        maps[key] = [b.map(x) for x in inputs]
        again = [b.map(x) for x in inputs]  # the same photo: the randomised weights never enter
        rho[key] = [rank_correlation(p, q) for p, q in zip(maps[key], again, strict=True)]
    order = list(maps)
    figures = faithfulness(
        lm, [im for _ in order for im in images], [h for k in order for h in maps[k]],
        [c for _ in order for c in classes], CARD_METRICS, precision=precision,
        batch_size=batch_size, pass_batch=pass_batch, protocol=protocol)
    n = len(images)
    wanted = ("deletion_auc", "insertion_auc", "road", "deletion_curve", "insertion_curve")
    return [{
        "name": photos[j][0], "sha256": photos[j][1], "class": int(classes[j]),
        "entries": [{"method": m, "layer": layer, "baseline": base,
                     "rho": float(rho[(m, layer, base)][j]),
                     "figures": {k: _plain(figures[i * n + j][k]) for k in wanted}}
                    for i, (m, layer, base) in enumerate(order)],
    } for j in range(n)]


def _plain(value: Any) -> Any:
    """A figure as JSON keeps it (float, or a list of floats for a curve)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(v) for v in value]
    return float(value)


def assemble_card(
    model: str,
    weights_id: str,
    per_photo: Sequence[dict[str, Any]],
    methods: Sequence[str],
    layers: Sequence[str],
    protocol: Protocol,
    randomisation: Randomisation,
    randomised: Sequence[str],
    baselines: Sequence[str],
) -> dict[str, Any]:
    """The card from :func:`photo_entries`' per-photo results (in the sample's order): rows
    averaged over the photos, ranked, and the recommendation. ``randomised``: the layers the
    check re-drew (``randomised_layers``)."""
    if not per_photo:
        raise ValueError("the report card needs at least one photo")
    order = [(e["method"], e["layer"], e["baseline"]) for e in per_photo[0]["entries"]]
    rows = [_row(m, layer, base, [p["entries"][i]["figures"] for p in per_photo],
                 [p["entries"][i]["rho"] for p in per_photo], randomisation.threshold)
            for i, (m, layer, base) in enumerate(order)]
    table = ranked(rows)
    best, why = recommend(table)
    return {
        "model": model, "weights_id": weights_id,
        "photos": [{"name": p["name"], "sha256": p["sha256"]} for p in per_photo],
        "classes": [p["class"] for p in per_photo], "methods": list(methods),
        "layers": list(layers), "baselines": list(baselines),
        "protocol": protocol.describe(), "metrics": list(CARD_METRICS),
        "randomisation": {**randomisation.describe(), "randomised_layers": list(randomised)},
        "rule": RULE, "rows": table,
        "recommended": {"method": best["method"], "layer": best["layer"], "reason": why},
    }


def compute_card(
    lm: LoadedModel,
    photos: Sequence[Photo],
    methods: str | Sequence[str],
    layers: Sequence[str] | None = None,
    protocol: Protocol = PROTOCOL,
    randomisation: Randomisation = RANDOMISATION,
    baselines: Sequence[ImageMethod] = tuple(BASELINES.values()),
    precision: str = "float32",
    batch_size: int = 16,
    pass_batch: int = 32,
    scorecam_channels: int | None = DEFAULT_MAX_CHANNELS,
) -> dict[str, Any]:
    """The report card of ``lm`` on ``photos`` (JSON-ready; see ``ranking`` for the rule).

    Every method in ``methods`` runs at every layer of ``layers`` (default
    :func:`candidate_layers`); each of ``baselines`` (maps made from the photo alone) is scored
    once. All maps explain the photo's top-1 class on the original model."""
    names = check_methods(methods)
    layers = list(layers or candidate_layers(lm))
    per_photo = photo_entries(lm, photos, names, layers, protocol, randomisation, baselines,
                              precision, batch_size, pass_batch, scorecam_channels)
    return assemble_card(lm.name, lm.weights_id, per_photo, names, layers, protocol,
                         randomisation, randomised_layers(lm.model, randomisation.layers),
                         [b.name for b in baselines])
