"""The heatmaps planner: a Grad-CAM job per distinct photo, with the CAM settings checked.

The request is checked before the first photo is read; the walk over the photos is shared by
the in-memory plan (local runs) and the spool (fleet submissions, ``spool.spool_heatmaps``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from convatlas.producer.plans.inputs import iter_hashed
from convatlas.producer.plans.plan import InputFile, Plan, PlanError, run_id_of
from convatlas.producer.plans.validate import (
    checked_precision,
    model_weights_id,
    parse_layers,
    resolve_class,
    resolve_model,
)
from convatlas.shared.config import Settings
from convatlas.shared.jobs import GradcamJob

__all__ = ["cam_settings", "heatmap_items", "plan_heatmaps"]


def cam_settings(cam: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """Validated Grad-CAM job settings, environment defaults filled in (``PlanError``).

    ``metrics`` (comma-separated faithfulness metric names, default none) has no environment
    default: they cost many extra passes per photo, so a run asks for them itself."""
    from convatlas.shared.engine.cams import check_methods
    from convatlas.shared.images.encode import output_format
    from convatlas.shared.metrics_summary import check_metrics

    cam = dict(cam or {})
    if "auto" in str(cam.get("methods") or cam.get("method") or "").split(","):
        raise PlanError("--method auto reads a local report card (`convatlas report-card`): use it "
                        "with local `heatmaps`, or name the method")
    try:
        side = int(settings.overlay_max_side if cam.get("overlay_max_side") is None
                   else cam["overlay_max_side"])
        if side < 0:
            raise ValueError(f"overlay max side must be 0 (original size) or more, got {side}")
        return {"methods": check_methods(cam.get("methods") or cam.get("method") or "gradcam"),
                "overlay_format": output_format(cam.get("overlay_format") or settings.overlay_format),
                "overlay_max_side": side,
                "metrics": check_metrics(cam.get("metrics") or ())}
    except ValueError as exc:
        raise PlanError(str(exc)) from exc


def heatmap_items(
    paths: list[str], model: str, cls: str | None, layer: str | None, settings: Settings,
    precision: str, cam: dict[str, Any] | None,
) -> Iterator[InputFile | tuple[str, str] | GradcamJob]:
    """Validate the request (``PlanError`` before the first item), then walk ``paths``: each
    input, refused file and new job, one at a time. The same photo twice is one job; the set of
    digests seen is the only per-photo state kept (about 100 bytes a photo)."""
    spec = resolve_model(model)
    checked_precision(precision)
    if not spec.can_gradcam:
        raise PlanError(spec.grad_cam_hint or f"{model} has no classifier for Grad-CAM")
    class_index = resolve_class(model, cls)
    if layer is not None:
        parse_layers(model, layer)
    job_settings = cam_settings(cam, settings)
    wid = model_weights_id(model, settings)
    seen: set[bytes] = set()
    for item in iter_hashed(paths):
        yield item
        if isinstance(item, InputFile) and (digest := bytes.fromhex(item.sha256)) not in seen:
            seen.add(digest)
            yield GradcamJob(model, wid, item.sha256, class_index, layer, item.name, precision,
                             **job_settings)


def plan_heatmaps(
    paths: list[str], model: str, cls: str | None, layer: str | None, settings: Settings,
    precision: str = "float32", cam: dict[str, Any] | None = None,
) -> Plan:
    """The whole plan in memory (local runs). ``cam``: the Grad-CAM job settings (``methods``,
    ``overlay_format``, ``overlay_max_side``, ``metrics``; see ``producer.options``); defaults
    from ``settings``. A fleet submission streams instead (``spool_heatmaps``)."""
    items = heatmap_items(paths, model, cls, layer, settings, precision, cam)
    plan = Plan("heatmaps", model, [])
    for item in items:
        if isinstance(item, InputFile):
            plan.inputs.append(item)
        elif isinstance(item, tuple):
            plan.rejected.append(item)
        else:
            plan.jobs.append(item)
    if not plan.inputs and not plan.rejected:
        raise PlanError("no images found")
    plan.run_id = run_id_of("heatmaps", plan.jobs)
    return plan
