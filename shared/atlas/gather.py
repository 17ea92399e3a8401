"""Gathering the atlas: which results of one model exist in storage, read into layers and units.

Nothing is written here. The pattern records and examples records are read once (``io_map``,
so a bucket's round trips overlap); the pages are made from what this returns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from convatlas.shared import keys
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.engine.styles import DEFAULT as DEFAULT_STYLE
from convatlas.shared.engine.styles import STYLES
from convatlas.shared.jobs.common import io_map
from convatlas.shared.render import GRID
from convatlas.shared.storage import ObjectNotFound, Storage

__all__ = ["UNITS_PER_PAGE", "Gathered", "Layer", "PatternRef", "Unit", "Variant", "gather", "slug_fields"]

UNITS_PER_PAGE = GRID * GRID
_SHA = re.compile(r"^[0-9a-f]{64}$")
_SLUG = re.compile(r"^s(?P<size>\d+)-n(?P<steps>\d+)-lr(?P<lr>[^-]+)-seed(?P<seed>\d+)"
                   r"-fb(?P<fallback>preactivation|none)(?P<rest>(?:-[A-Za-z0-9._]+)*)$")

#: Per photo sha256: (layer, unit, rank, score) of each unit whose examples it is in.
Tops = dict[str, list[tuple[str, int, int, float]]]


def slug_fields(slug: str) -> dict[str, str] | None:
    """The parameters written in a pattern folder's name (``PatternParams.slug``): size, steps,
    lr, seed, fallback, precision, style and any further tokens (``extra``); ``None`` when the
    name is not a slug."""
    m = _SLUG.match(slug)
    if m is None:
        return None
    out = {k: v for k, v in m.groupdict().items() if k != "rest"}
    out.update(precision="float32", style=DEFAULT_STYLE, extra="")
    extra = []
    for token in m["rest"].split("-")[1:]:
        if token == "bf16":
            out["precision"] = "bfloat16"
        elif token in STYLES:
            out["style"] = token
        else:
            extra.append(token)
    out["extra"] = "-".join(extra)
    return out


@dataclass
class Variant:
    """One set of pattern parameters computed for a layer: one result-key folder (its slug)."""

    style: str
    slug: str
    prefix: str
    default: bool  # the style's default parameters (``PatternParams(style=...)``)
    fields: dict[str, str] = field(default_factory=dict)
    units: set[int] = field(default_factory=set)  # units with a record under it
    pages: dict[int, str] = field(default_factory=dict)  # grid page → results key

    @property
    def label(self) -> str:
        """The parameters in words, e.g. ``48 px, 20 steps, step size 1, seed 0``."""
        f = self.fields
        if not f:
            return self.slug
        step = "learning rate" if self.style != DEFAULT_STYLE else "step size"
        text = f"{f['size']} px, {f['steps']} steps, {step} {f['lr']}, seed {f['seed']}"
        if f["fallback"] != "preactivation":
            text += f", fallback {f['fallback']}"
        if f["precision"] != "float32":
            text += f", {f['precision']}"
        for token in filter(None, f["extra"].split("-")):
            text += f", spectrum {token[2:]}" if re.fullmatch(r"sp[0-9a-f]{12}", token) else f", {token}"
        return text + (" (default)" if self.default else "")


@dataclass
class PatternRef:
    """One unit's pattern under one variant: its record and its images' results keys (maco:
    also the pattern with its transparency map as alpha)."""

    variant: Variant
    record: dict[str, Any]
    png: str
    rgba_png: str = ""
    quality: dict[str, Any] | None = None  # seed stability, path similarity (``atlas.scores``)


@dataclass
class Unit:
    layer: str
    index: int
    #: style → the unit's patterns in that style, the layer's primary variant first
    patterns: dict[str, list[PatternRef]] = field(default_factory=dict)
    examples: dict[str, Any] | None = None  # the unit's examples record

    def shown(self, style: str) -> PatternRef | None:
        """The pattern shown for ``style`` (cards, flags): the first of its variants."""
        refs = self.patterns.get(style)
        return refs[0] if refs else None


@dataclass
class Layer:
    name: str
    kind: str
    channels: int
    rf: int | None = None
    units: list[Unit] = field(default_factory=list)
    #: every pattern variant computed for the layer, by style order, primary first within a style
    variants: list[Variant] = field(default_factory=list)
    example_pages: dict[int, str] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        return any(u.patterns or u.examples for u in self.units)

    @property
    def pages(self) -> int:
        return max(1, -(-self.channels // UNITS_PER_PAGE))

    def variants_of(self, style: str) -> list[Variant]:
        return [v for v in self.variants if v.style == style]


@dataclass
class Gathered:
    """One model's results: its layers (Conv2D ones, and any other with results), the examples
    configuration shown (its key prefix, if any) and photo sha256 → one Grad-CAM overlay key."""

    model: str
    weights_id: str
    examples: str | None
    layers: list[Layer]
    heatmaps: dict[str, str]

    @property
    def shown(self) -> list[Layer]:
        """The layers that get pages (those with results)."""
        return [layer for layer in self.layers if layer.has_data]

    def tops(self) -> tuple[Tops, dict[str, str]]:
        """Who tops what: per photo, the units whose examples it is in; and the photos' names."""
        tops: Tops = {}
        names: dict[str, str] = {}
        for layer in self.shown:
            for u in layer.units:
                for e in (u.examples or {}).get("examples", []):
                    tops.setdefault(e["image_sha256"], []).append((layer.name, u.index, e["rank"], e["score"]))
                    if e.get("name"):
                        names.setdefault(e["image_sha256"], e["name"])
        return tops, names


def gather(results: Storage, model: str, settings: Any) -> Gathered:
    """Read what ``results`` holds for ``model`` (``ValueError`` without its weights file: the
    results are keyed by the weights' hash)."""
    from convatlas.shared.models.registry import get_spec, layer_table
    from convatlas.shared.models.zoo import WeightsUnavailable

    spec = get_spec(model)
    try:  # keras.applications models: from the bucket's record when the file is not here
        wid = spec.weights_id(settings)
    except WeightsUnavailable as exc:
        raise ValueError(f"{model}: no weights here, so no results to show ({exc})") from exc
    base = f"results/{keys.model_slug(model)}/{wid[:12]}/"
    by_layer: dict[str, list[str]] = {}  # ".../patterns/v1/<layer>/" → its keys
    for key in results.list_keys(f"{base}patterns/"):
        by_layer.setdefault(key.rsplit("/", 2)[0] + "/", []).append(key)
    ex_listing = results.list_keys(f"{base}examples/")
    cfg = _examples_config(ex_listing, f"{base}examples/")
    ex_keys = {k for k in ex_listing if cfg and k.startswith(cfg + "/")}
    heatmaps = _heatmaps(results.list_keys(f"{base}gradcam/"))

    layers: list[Layer] = []
    for info in layer_table(model):
        layer = Layer(info.name, info.kind, info.channels)
        lp = keys.pattern_prefix(model, wid, info.name, "x")[:-1]
        layer.variants = _variants(by_layer.get(lp, []), lp)
        ep = keys.examples_layer_prefix(cfg, info.name) if cfg else None
        for p in range(layer.pages):
            if ep and f"{ep}/page{p:02d}.png" in ex_keys:
                layer.example_pages[p] = f"{ep}/page{p:02d}.png"

        def load(u: int, name: str = info.name, variants: list[Variant] = layer.variants,
                 ep: str | None = ep) -> Unit:
            unit = Unit(name, u)
            for v in variants:
                if u in v.units:
                    rec = _read(results, keys.pattern_key(v.prefix, u, "json"))
                    if rec is not None:
                        rgba = keys.pattern_key(v.prefix, u, "rgba.png") if rec.get("alpha") else ""
                        unit.patterns.setdefault(v.style, []).append(
                            PatternRef(v, rec, keys.pattern_key(v.prefix, u, "png"), rgba))
            if ep and f"{ep}/units/u{u:04d}.json" in ex_keys:
                unit.examples = _read(results, f"{ep}/units/u{u:04d}.json")
            return unit

        layer.units = io_map(load, range(info.channels))
        if info.kind == "Conv2D" or layer.has_data:
            layers.append(layer)
    side = int(cfg.rsplit("/s", 1)[1].split("-")[0]) if cfg else (spec.input_size or 224)
    fields_ = _fields(spec, side)
    for layer in layers:
        g = fields_.get(layer.name)
        layer.rf = g.rf[0] if g is not None else None
    return Gathered(model, wid, cfg, layers, heatmaps)


def _variants(layer_keys: list[str], layer_prefix: str) -> list[Variant]:
    """The pattern folders in ``layer_keys`` (those under ``layer_prefix``,
    ``.../patterns/v1/<layer>/``): each slug with its units and grid pages. Ordered by style (book, lucid, ...), then the style's default
    parameters first, then the most units, then the slug."""
    found: dict[str, Variant] = {}
    for key in layer_keys:
        parts = key[len(layer_prefix):].split("/")
        if len(parts) != 2:
            continue
        slug, name = parts
        fields_ = slug_fields(slug)
        style = fields_["style"] if fields_ else DEFAULT_STYLE
        if slug not in found:
            default = style in STYLES and PatternParams(style=style).slug() == slug
            found[slug] = Variant(style, slug, layer_prefix + slug, default, fields_ or {})
        v = found[slug]
        if m := re.fullmatch(r"f(\d{4,})\.json", name):
            v.units.add(int(m[1]))
        elif m := re.fullmatch(r"grid-page(\d+)\.png", name):
            v.pages[int(m[1])] = key
    order = {name: i for i, name in enumerate(STYLES)}
    return sorted(found.values(), key=lambda v: (order.get(v.style, len(order)), not v.default,
                                                  -len(v.units), v.slug))


def _examples_config(listing: list[str], base: str) -> str | None:
    """The examples configuration to show: the one with most layers, preferring float32, k = 9."""
    found: dict[str, set[str]] = {}
    for key in listing:
        parts = key[len(base):].split("/")
        if len(parts) == 4 and parts[3] == "state.json":
            found.setdefault(f"{base}{parts[0]}/{parts[1]}", set()).add(parts[2])
    if not found:
        return None

    def rank(cfg: str) -> tuple[int, int, int, str]:
        ver, sk = cfg[len(base):].split("/")
        return (-len(found[cfg]), "-" in ver, not sk.endswith("-k9"), cfg)

    return min(found, key=rank)


def _heatmaps(listing: list[str]) -> dict[str, str]:
    """photo sha256 → the key of one Grad-CAM overlay of it (``.../<sha256>/[<variant>/]overlay.*``;
    top-1 of the default layer first, then plain Grad-CAM variants)."""
    out: dict[str, str] = {}

    def rank(key: str) -> tuple[bool, bool, str]:
        return ("/auto/top1/" not in key, "/gradcam-" not in key, key)

    for key in sorted(listing, key=rank):
        parts = key.split("/")
        if not parts[-1].startswith("overlay."):
            continue
        sha = next((p for p in reversed(parts[:-1]) if _SHA.match(p)), None)
        if sha is not None:
            out.setdefault(sha, key)
    return out


def _read(storage: Storage, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(storage.get_bytes(key))
    except (ObjectNotFound, ValueError):
        return None


def _fields(spec: Any, side: int) -> dict[str, Any]:
    """Receptive fields of the model's layers at ``side`` (empty when they cannot be computed)."""
    from convatlas.shared.engine.receptive_fields import GeometryError, receptive_fields

    try:
        return receptive_fields(spec.build(), side)
    except (GeometryError, ValueError):
        return {}
