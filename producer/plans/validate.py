"""Checks of a request's model, layers, filters, class and precision, each refused with a
``PlanError`` that lists what is valid."""

from __future__ import annotations

from typing import Any

from convatlas.producer.plans.plan import PlanError
from convatlas.shared.config import Settings
from convatlas.shared.engine.precision import check_precision

__all__ = ["check_pattern_size", "checked_precision", "model_weights_id", "parse_filters",
           "parse_layers", "resolve_class", "resolve_model"]


def model_weights_id(model: str, settings: Settings) -> str:
    """The hash of the weights that will be used, without loading the model."""
    from convatlas.shared.models import zoo

    spec = resolve_model(model)
    try:  # keras.applications models: the local cache, the bucket's record, or a download
        return str(spec.weights_id(settings))
    except zoo.WeightsUnavailable as exc:
        raise PlanError(f"{exc}. Offline models: {', '.join(zoo.OFFLINE_MODELS)}") from exc


def resolve_model(model: str) -> Any:
    """The model's registry spec (``PlanError`` listing the known models)."""
    from convatlas.shared.models.registry import UnknownModel, get_spec

    try:
        return get_spec(model)
    except UnknownModel as exc:
        raise PlanError(str(exc)) from exc


def parse_filters(spec: str, channels: int) -> list[int]:
    """'all', '0:64', '3', '0,5,9', '0:64,128:192' → sorted unique indices, range-checked."""
    spec = spec.strip()
    if spec == "all":
        return list(range(channels))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if ":" in part:
                a, b = part.split(":", 1)
                lo, hi = int(a or 0), int(b) if b else channels
                if lo >= hi:
                    raise PlanError(f"empty filter range {part!r}")
                rng = range(lo, hi)
            else:
                rng = range(int(part), int(part) + 1)
        except ValueError as exc:
            raise PlanError(f"bad filter spec {part!r}: use 'all', '0:64' or '0,3,7'") from exc
        bad = [i for i in (rng.start, rng.stop - 1) if not 0 <= i < channels]
        if bad:
            raise PlanError(f"filter index {bad[0]} out of range: this layer has filters 0..{channels - 1}")
        out.update(rng)
    return sorted(out)


def parse_layers(model: str, layers: str) -> list[tuple[str, int]]:
    """'all' (every Conv2D layer) or comma-separated names → (name, channels), each checked."""
    from convatlas.shared.models.registry import find_layer, layer_table

    if layers.strip() == "all":
        return [(i.name, i.channels) for i in layer_table(model) if i.kind == "Conv2D"]
    out = []
    for name in [s.strip() for s in layers.split(",") if s.strip()]:
        try:
            info = find_layer(model, name)
        except LookupError as exc:
            raise PlanError(str(exc)) from exc
        out.append((info.name, info.channels))
    if not out:
        raise PlanError("no layers given")
    return out


def check_pattern_size(model: str, layers: list[tuple[str, int]], size: int) -> None:
    """Refuse a pattern ``size`` at which a chosen layer has no feature map left (its valid
    convolutions and poolings would shrink it to nothing), naming the size each one needs."""
    from convatlas.shared.models.registry import find_layer

    small = [(name, need) for name, _ in layers if (need := find_layer(model, name).min_size) > size]
    if small:
        shown = ", ".join(f"{name} needs {need}" for name, need in small[:6])
        more = f" and {len(small) - 6} more" if len(small) > 6 else ""
        raise PlanError(
            f"--size {size} is too small for {len(small)} layer(s) of {model}: {shown}{more} px "
            f"(use --size {max(n for _, n in small)} or more, or shallower layers)")


def resolve_class(model: str, cls: str | None) -> int | None:
    """The ImageNet class index of ``cls`` (a name or an index); None for the top-1 class."""
    if cls is None or cls == "" or cls == "top1":
        return None
    from convatlas.shared.models.labels import find_class, imagenet_classes

    try:
        return find_class(cls, imagenet_classes()).index
    except LookupError as exc:
        raise PlanError(str(exc)) from exc


def checked_precision(precision: str) -> str:
    """``precision`` if the engine supports it, else ``PlanError``."""
    try:
        check_precision(precision)
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
    return precision
