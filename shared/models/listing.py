"""What ``convatlas models`` prints: per model, where its weights are, what it can do, its layers;
and ``convatlas models fetch``: weights into the fleet's bucket once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from convatlas.shared.config import Settings
from convatlas.shared.models import app_weights
from convatlas.shared.models.registry import (
    BUILTIN,
    ModelSpec,
    UnknownModel,
    layer_table,
    model_choices,
)

SHOWN_LAYERS = 12  # conv layers shown of a deep model in the full listing (a named model shows all)
ELIDED_ABOVE = 40  # conv layers: up to this many are all shown


def weights_status(spec: ModelSpec, settings: Settings) -> str:
    if spec.weights_where is not None:
        found = spec.weights_where(settings)
        if found:
            return f"available offline (weights in the {found})"
        return f"NOT available offline: weights need `{app_weights.fetch_command(spec.name)}` or internet"
    if spec.available_offline(settings):
        return "available offline"
    return "NOT available offline (weights missing)"


def describe(spec: ModelSpec, settings: Settings, *, layers: bool, all_layers: bool = False) -> Iterator[str]:
    can = ", ".join(x for x, ok in (("patterns", spec.can_patterns), ("grad-cam", spec.can_gradcam)) if ok)
    size = f"; input {spec.input_size}×{spec.input_size}" if spec.input_size else ""
    cam = f"; Grad-CAM layer {spec.gradcam_layer}" if spec.gradcam_layer else ""
    yield f"{spec.name}: {spec.description}"
    yield f"  {weights_status(spec, settings)}; can do: {can}; preprocessing: {spec.preprocessing}{size}{cam}"
    if layers:
        convs = [i for i in layer_table(spec.name) if i.kind == "Conv2D"]
        shown = [f"{i.name}({i.channels})" for i in convs]
        if not all_layers and len(shown) > ELIDED_ABOVE:
            half = SHOWN_LAYERS // 2
            shown = [*shown[:half], f"… ({len(convs) - SHOWN_LAYERS} more: `convatlas models {spec.name}`) …", *shown[-half:]]
        yield f"  {len(convs)} conv layers: " + ", ".join(shown)


def listing(names: list[str], settings: Settings, *, layers: bool) -> Iterator[str]:
    """The listing of ``names`` (all built-in models when empty)."""
    for name in names:
        if name not in BUILTIN:
            raise UnknownModel(f"unknown model {name!r}: choose from {model_choices()}")
    for spec in (BUILTIN[n] for n in names) if names else BUILTIN.values():
        yield from describe(spec, settings, layers=layers, all_layers=bool(names))


def fetch(names: list[str], settings: Settings, source: Path | None = None) -> Iterator[str]:
    """Put each model's weights in the bucket (downloaded, from the local cache, or ``source``),
    checked against the hash Keras publishes; one line per model."""
    from convatlas.shared.models.applications import APPS

    if not names:
        raise ValueError("name the models to fetch, e.g. `convatlas models fetch resnet50`")
    if source is not None and len(names) != 1:
        raise ValueError("--from FILE takes one model name")
    for name in names:
        if name not in APPS:
            raise UnknownModel(f"{name} is not a keras.applications model: choose from {', '.join(APPS)}")
    if app_weights.bucket(settings) is None:  # before any download
        raise app_weights.WeightsUnavailable(app_weights.NO_BUCKET)
    for name in names:
        path = source if source is not None else app_weights.resolve(name, settings)[0]
        key, sha = app_weights.put_in_bucket(name, path, settings)
        yield f"{name}: {path} (sha256 {sha}) → bucket key {key}"
