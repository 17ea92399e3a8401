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
from convatlas.shared.jobs.common import io_map
from convatlas.shared.render import GRID
from convatlas.shared.storage import ObjectNotFound, Storage

__all__ = ["UNITS_PER_PAGE", "Gathered", "Layer", "Unit", "gather"]

UNITS_PER_PAGE = GRID * GRID
_SHA = re.compile(r"^[0-9a-f]{64}$")

#: Per photo sha256: (layer, unit, rank, score) of each unit whose examples it is in.
Tops = dict[str, list[tuple[str, int, int, float]]]


@dataclass
class Unit:
    layer: str
    index: int
    book: dict[str, Any] | None = None  # the tile's record
    lucid: dict[str, Any] | None = None
    book_png: str = ""  # results keys of the pattern images
    lucid_png: str = ""
    examples: dict[str, Any] | None = None  # the unit's examples record


@dataclass
class Layer:
    name: str
    kind: str
    channels: int
    rf: int | None = None
    units: list[Unit] = field(default_factory=list)
    book_pages: dict[int, str] = field(default_factory=dict)  # page → results key
    example_pages: dict[int, str] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        return any(u.book or u.lucid or u.examples for u in self.units)

    @property
    def pages(self) -> int:
        return max(1, -(-self.channels // UNITS_PER_PAGE))


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
    from convatlas.shared.hashing import file_sha256
    from convatlas.shared.models.registry import get_spec, layer_table

    spec = get_spec(model)
    wfile = spec.weights_file(settings)
    if wfile is None:
        raise ValueError(f"{model}: no weights file here, so no results to show")
    wid = file_sha256(wfile)
    base = f"results/{keys.model_slug(model)}/{wid[:12]}/"
    pattern_keys = set(results.list_keys(f"{base}patterns/"))
    ex_listing = results.list_keys(f"{base}examples/")
    cfg = _examples_config(ex_listing, f"{base}examples/")
    ex_keys = {k for k in ex_listing if cfg and k.startswith(cfg + "/")}
    heatmaps = _heatmaps(results.list_keys(f"{base}gradcam/"))
    book_slug, lucid_slug = PatternParams().slug(), PatternParams(style="lucid").slug()

    layers: list[Layer] = []
    for info in layer_table(model):
        layer = Layer(info.name, info.kind, info.channels)
        bp = keys.pattern_prefix(model, wid, info.name, book_slug)
        lp = keys.pattern_prefix(model, wid, info.name, lucid_slug)
        ep = keys.examples_layer_prefix(cfg, info.name) if cfg else None
        for p in range(layer.pages):
            if keys.grid_key(bp, p) in pattern_keys:
                layer.book_pages[p] = keys.grid_key(bp, p)
            if ep and f"{ep}/page{p:02d}.png" in ex_keys:
                layer.example_pages[p] = f"{ep}/page{p:02d}.png"

        def load(u: int, name: str = info.name, bp: str = bp, lp: str = lp,
                 ep: str | None = ep) -> Unit:
            unit = Unit(name, u)
            if keys.pattern_key(bp, u, "json") in pattern_keys:
                unit.book = _read(results, keys.pattern_key(bp, u, "json"))
                unit.book_png = keys.pattern_key(bp, u, "png")
            if keys.pattern_key(lp, u, "json") in pattern_keys:
                unit.lucid = _read(results, keys.pattern_key(lp, u, "json"))
                unit.lucid_png = keys.pattern_key(lp, u, "png")
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
