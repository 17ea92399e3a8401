"""The quality scores that need more than one result (issue 27 item 2): seed stability (a unit's
patterns for seeds s, s+1, s+2) and path similarity (a pattern against its unit's dataset
examples), scored at atlas build time over what storage holds, after both the patterns and the
examples exist. Forward passes only (no ascent is recomputed): the stored pattern PNGs and the
examples' receptive-field patches go through one multi-output model, batched per layer and
pattern variant (``convatlas.shared.engine.quality`` says what each score means).

Each score is kept in a small record per unit and variant, content-addressed by its inputs:
``<pattern variant prefix>/quality/<hash>/fNNNN.json``, the hash over the scoring version, the
seed siblings' folders and the unit's examples (configuration, photos, positions); a rebuild
reads it back, new seeds or new examples give a new key. A storage that refuses the write
(a role without write access to results) still gets the scores on its pages.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from convatlas.shared import keys
from convatlas.shared.atlas.gather import Gathered, Layer, PatternRef, Unit, Variant
from convatlas.shared.engine import quality
from convatlas.shared.storage import ObjectNotFound, Storage

__all__ = ["QUALITY_VERSION", "quality_key", "score_atlas", "seed_siblings"]

QUALITY_VERSION = 1
log = logging.getLogger(__name__)


def seed_siblings(layer: Layer, v: Variant, unit: int) -> list[Variant]:
    """The variants of ``v``'s style with seeds s+1 … s+SEEDS-1 and otherwise ``v``'s parameters
    that hold ``unit``; empty unless all of them do."""
    if not v.fields:
        return []
    found = []
    for k in range(1, quality.SEEDS):
        want = {**v.fields, "seed": str(int(v.fields["seed"]) + k)}
        match = [w for w in layer.variants_of(v.style) if w.fields == want and unit in w.units]
        if not match:
            return []
        found.append(match[0])
    return found


def quality_key(ref: PatternRef, unit: Unit, siblings: list[Variant], examples_cfg: str | None) -> str:
    """Where ``unit``'s scores under ``ref``'s variant are kept (content-addressed by inputs)."""
    ex = [(e["image_sha256"], e["position"]) for e in (unit.examples or {}).get("examples", [])]
    h = keys.short_hash({"v": QUALITY_VERSION, "seeds": [s.slug for s in siblings],
                         "examples": examples_cfg if ex else None, "top": ex}, 16)
    return f"{ref.variant.prefix}/quality/{h}/f{unit.index:04d}.json"


def score_atlas(results: Storage, found: Gathered) -> None:
    """Fill ``ref.quality`` of the pattern shown per style (``Unit.shown``) of every unit of every
    shown layer: read back, or scored (the model loaded once, only when something is left to
    score). The first build of a large atlas pays a forward pass per pattern, seed sibling and
    example patch (k + 3 per unit and style); later builds read the records back."""
    loaded: dict[str, Any] = {}

    def model() -> Any:
        if "lm" not in loaded:
            from convatlas.shared.models.registry import get_model

            loaded["lm"] = get_model(found.model)
        return loaded["lm"]

    order = [layer.name for layer in found.layers]  # the model's order
    conv = {layer.name for layer in found.layers if "Conv" in layer.kind}
    for layer in found.shown:
        below = [name for name in order[: order.index(layer.name)] if name in conv]
        _score_layer(results, found.examples, layer, below, model)


def _score_layer(results: Storage, cfg: str | None, layer: Layer, below: list[str],
                 model: Callable[[], Any]) -> None:
    todo: dict[str, list[tuple[Unit, PatternRef, list[Variant], str]]] = {}
    for u in layer.units:
        for refs in u.patterns.values():
            for ref in refs[:1]:  # the pattern the pages show per style (its stats, the table)
                sibs = seed_siblings(layer, ref.variant, u.index)
                has_path = bool(below and (u.examples or {}).get("examples"))
                if not sibs and not has_path:
                    ref.quality = {"seed_stability": None, "path_similarity": None,
                                   "path_layers": below}
                    continue
                key = quality_key(ref, u, sibs, cfg)
                try:
                    ref.quality = json.loads(results.get_bytes(key))
                except (ObjectNotFound, ValueError):
                    todo.setdefault(ref.variant.slug, []).append((u, ref, sibs, key))
    for group in todo.values():
        _score_group(results, layer, below, group, model())


def _score_group(results: Storage, layer: Layer, below: list[str],
                 group: list[tuple[Unit, PatternRef, list[Variant], str]], lm: Any) -> None:
    """One variant's units of one layer: every pattern image (and its seed siblings') in one
    batched pass, every example patch in another."""
    probe_layers = [*below, layer.name]
    images: list[np.ndarray] = []
    rows: list[tuple[int, list[int]]] = []  # per unit: its pattern's row, its siblings' rows
    for u, ref, sibs, _ in group:
        own = len(images)
        images.append(_pattern_pixels(results, ref.png))
        sib_rows = []
        for s in sibs:
            sib_rows.append(len(images))
            images.append(_pattern_pixels(results, keys.pattern_key(s.prefix, u.index, "png")))
        rows.append((own, sib_rows))
    side = images[0].shape[0]
    net = lm.any_size_model("float32")
    prof = quality.layer_profiles(net, probe_layers, lm.preprocess, np.stack(images))
    patches, owner = _example_patches(results, [u for u, *_ in group], side) if below else ([], [])
    ex_prof = (quality.layer_profiles(net, below, lm.preprocess, np.stack(patches))
               if patches else [])
    owner_arr = np.asarray(owner)
    for n, ((u, ref, sibs, key), (own, sib_rows)) in enumerate(zip(group, rows, strict=True)):
        rec: dict[str, Any] = {"version": QUALITY_VERSION, "layer": layer.name, "unit": u.index,
                               "slug": ref.variant.slug, "seed_stability": None,
                               "seeds": [ref.variant.slug] + [s.slug for s in sibs],
                               "path_similarity": None, "path_similarity_mean": None,
                               "path_layers": below, "path_flag_below": quality.PATH_FLAG,
                               "path_flagged": None, "examples_used": 0}
        if sibs:
            rec["seed_stability"] = quality.seed_stability(prof[-1][[own, *sib_rows]])
        mine = np.flatnonzero(owner_arr == n) if len(owner_arr) else np.zeros(0, int)
        if len(mine):
            best, mean = quality.path_similarity([p[own] for p in prof[:-1]],
                                                 [p[mine] for p in ex_prof])
            rec.update(path_similarity=best, path_similarity_mean=mean,
                       path_flagged=best < quality.PATH_FLAG, examples_used=len(mine))
        ref.quality = rec
        try:
            results.put_bytes(key, json.dumps(rec, indent=1).encode(), "application/json")
        except Exception as exc:  # noqa: BLE001 - a read-only role: the pages still show it
            log.warning("quality record %s not kept: %s", key, exc)


def _pattern_pixels(results: Storage, key: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(results.get_bytes(key))) as im:
        return np.asarray(im.convert("RGB"), np.float32)


def _example_patches(results: Storage, units: list[Unit], side: int) -> tuple[list[np.ndarray], list[int]]:
    """Each unit's top-k receptive-field patches at ``side`` px (as the pattern), and the index
    in ``units`` of the unit each belongs to; photos that cannot be read are left out."""
    from convatlas.shared.images.checks import ImageDecodeError
    from convatlas.shared.images.decode import decode_photo
    from convatlas.shared.patches import CROP_SIDE, patch

    photos: dict[str, np.ndarray | None] = {}

    def photo(sha: str) -> np.ndarray | None:
        if sha not in photos:
            try:
                data = results.get_bytes(keys.input_key(sha))
                photos[sha] = decode_photo(data, overlay_max_side=CROP_SIDE).overlay_base
            except (ObjectNotFound, ImageDecodeError):
                photos[sha] = None
        return photos[sha]

    patches: list[np.ndarray] = []
    owner: list[int] = []
    for n, u in enumerate(units):
        ex = u.examples or {}
        input_side = int(ex.get("input_side") or 0)
        for e in ex.get("examples", []):
            base = photo(e["image_sha256"])
            if base is None or not input_side:
                continue
            box = tuple(int(v) for v in e["box"])
            patches.append(patch(base, box, (input_side, input_side), side).astype(np.float32))  # type: ignore[arg-type]
            owner.append(n)
    return patches, owner
