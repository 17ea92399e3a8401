"""Faithfulness metrics of a run: their names, the per-method aggregate (mean ± sd over the photos)
and how the report, summary and gallery show them.

No Keras and no model (the report writer imports it): the names, summary fields, labels and
curve colours come from the metric registry (``convatlas.shared.engine.metrics``), where each
metric declares them. The metrics themselves are computed by
``convatlas.shared.engine.faithfulness`` in each Grad-CAM job; a job's record holds, per method,
``record["methods"][m]["metrics"]`` (AUCs, curves, ROAD figures, drop/increase), and the run
report's items carry them in ``method_stats[m]["metrics"]``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from convatlas.shared.engine.metrics import METRICS, REGISTRY

__all__ = ["CURVES", "CURVE_COLOURS", "LABELS", "METRICS", "METRIC_SCALARS", "SCALARS", "canonical_metrics",
           "check_metrics", "curves_svg", "gallery_section", "photo_figure", "report_entry",
           "run_metrics", "summarise", "summary_lines"]

# per-photo scalars of each metric, as the metric declares them (a photo also records
# ``probability``, the unperturbed p)
METRIC_SCALARS: dict[str, tuple[str, ...]] = {
    name: tuple(f.key for f in m.summary) for name, m in REGISTRY.items()
}
SCALARS: tuple[str, ...] = ("probability", *(k for keys in METRIC_SCALARS.values() for k in keys))
LABELS: dict[str, str] = {"probability": "p",
                          **{f.key: f.label for m in REGISTRY.values() for f in m.summary}}
_PHOTO_LEGEND = tuple(f.key for m in REGISTRY.values() for f in m.summary if f.per_photo)
CURVE_COLOURS: dict[str, str] = {name: m.curve_colour for name, m in REGISTRY.items()
                                 if m.curve_colour}
CURVES: tuple[str, ...] = tuple(CURVE_COLOURS)  # drawn in the gallery


def check_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """Validated metric names in the order given, duplicates dropped; ``""`` → no metrics.

    Raises ``ValueError`` naming the unknown ones and listing :data:`METRICS`.
    """
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {', '.join(map(repr, unknown))}: choose from {', '.join(METRICS)}"
        )
    return tuple(dict.fromkeys(names))


def canonical_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """Validated names in :data:`METRICS` order: ``insertion,deletion`` is ``deletion,insertion``
    (the same figures, so the same result key)."""
    chosen = set(check_metrics(metrics))
    return tuple(m for m in METRICS if m in chosen)


def summarise(results: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (n − 1; 0 for one photo) and count of each scalar over a run.

    ``avg_drop``'s mean is Average Drop, ``conf_increase``'s the Increase in Confidence (fractions).
    """
    results = list(results)
    out: dict[str, dict[str, float]] = {}
    for key in SCALARS:
        values = [float(r[key]) for r in results if key in r and r[key] is not None]
        if values:
            mean = math.fsum(values) / len(values)
            sd = (math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
                  if len(values) > 1 else 0.0)
            out[key] = {"mean": mean, "sd": sd, "n": float(len(values))}
    return out


def _mean_curve(curves: list[list[float]]) -> list[float]:
    """The point-wise mean of the curves of the most common length (one protocol per run)."""
    if not curves:
        return []
    lengths = [len(c) for c in curves]
    n = max(set(lengths), key=lengths.count)
    same = [c for c in curves if len(c) == n]
    return [math.fsum(c[i] for c in same) / len(same) for i in range(n)]


def run_metrics(items: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, over the run's done Grad-CAM jobs that recorded metrics: ``photos``, the
    mean ± sd of every scalar (:func:`summarise`) and the mean deletion/insertion curves."""
    per_method: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if item.get("kind") != "gradcam" or item.get("status") != "done":
            continue
        stats_of = item.get("method_stats") or {}
        order = [m for m in item.get("methods") or () if m in stats_of]  # as requested
        for method in order + sorted(set(stats_of) - set(order)):
            stats = stats_of[method]
            figures = (stats or {}).get("metrics")
            if figures:
                per_method.setdefault(method, []).append(figures)
    return {
        method: {
            "photos": len(figures),
            "summary": summarise(figures),
            "mean_curves": {c: _mean_curve([f[f"{c}_curve"] for f in figures if f.get(f"{c}_curve")])
                            for c in CURVES if any(f.get(f"{c}_curve") for f in figures)},
        }
        for method, figures in per_method.items()
    }


def report_entry(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's ``metrics`` field when any job recorded metrics, else nothing (old reports
    keep their keys)."""
    figures = run_metrics(items)
    return {"metrics": figures} if figures else {}


def _fmt(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per method: mean ± sd over the run of each recorded metric."""
    lines = []
    for method, figures in (report.get("metrics") or {}).items():
        stats = figures["summary"]
        parts = [f"{LABELS[k]} {_fmt(stats[k])}" for k in SCALARS[1:] if k in stats]
        lines.append(f"  metrics {method} (mean ± sd over {figures['photos']} photos): "
                     + ", ".join(parts))
    return lines


def curves_svg(curves: dict[str, list[float]], width: int = 240, height: int = 120,
               title: str = "") -> str:
    """Deletion (red) and insertion (green) curves as an inline SVG: x = fraction of pixels
    removed/inserted (0 → 1), y = probability of the class (0 → 1)."""
    pad = 4
    w, h = width - 2 * pad, height - 2 * pad

    def points(curve: list[float]) -> str:
        steps = max(len(curve) - 1, 1)
        return " ".join(f"{pad + w * i / steps:.1f},{pad + h * (1 - min(max(v, 0.0), 1.0)):.1f}"
                        for i, v in enumerate(curve))

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' role='img'>"]
    if title:
        parts.append(f"<title>{html.escape(title)}</title>")
    parts.append(f"<rect x='{pad}' y='{pad}' width='{w}' height='{h}' fill='#1a1a1a' stroke='#555'/>")
    for name in CURVES:
        curve = curves.get(name)
        if curve:
            parts.append(f"<polyline class='{name}' fill='none' stroke='{CURVE_COLOURS[name]}' "
                         f"stroke-width='2' points='{points(curve)}'/>")
    parts.append("</svg>")
    return "".join(parts)


def _legend(stats: dict[str, Any], scalar: str) -> str:
    s = stats.get(scalar)
    if s is None:
        return ""
    if isinstance(s, dict):
        return f"{LABELS[scalar]} {_fmt(s)}"
    return f"{LABELS[scalar]} {float(s):.3f}"


def photo_figure(method_stats: dict[str, Any], method: str) -> str:
    """A photo's curves and figures for one method (empty when it recorded none)."""
    figures = (method_stats.get(method) or {}).get("metrics")
    if not figures:
        return ""
    curves = {c: figures[f"{c}_curve"] for c in CURVES if figures.get(f"{c}_curve")}
    text = " · ".join(t for t in (_legend(figures, k) for k in _PHOTO_LEGEND) if t)
    svg = curves_svg(curves, 200, 80, f"{method}: deletion (red), insertion (green)") if curves else ""
    return f"<div class='m'>{svg}<br>{html.escape(text)}</div>"


def gallery_section(report: dict[str, Any]) -> str:
    """The run's figures per method: mean curves and mean ± sd of each metric."""
    metrics = report.get("metrics") or {}
    if not metrics:
        return ""
    parts = ["<h2>Faithfulness</h2><p>Curves: mean probability of the class as the most salient "
             "pixels are deleted (red) or inserted (green), x from 0 to all pixels.</p>"
             "<div class='g'>"]
    for method, figures in metrics.items():
        stats = figures["summary"]
        text = "<br>".join(html.escape(_legend(stats, k)) for k in SCALARS[1:] if k in stats)
        svg = curves_svg(figures.get("mean_curves") or {}, title=f"{method}: mean curves")
        parts.append(f"<figure>{svg}<figcaption>{html.escape(method)} "
                     f"({figures['photos']} photos, mean ± sd)<br>{text}</figcaption></figure>")
    parts.append("</div>")
    return "".join(parts)
