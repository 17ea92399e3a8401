"""Dataset-examples reduce jobs: merge a layer's map batches into its top-k and render its pages.

Layout under ``keys.examples_prefix(model, weights, side, k, precision)`` written here (the maps'
files are ``convatlas.shared.jobs.examples_map``'s):

* ``<layer>/state.json`` — the layer's merged top-k, statistics and the batches merged so far
  (the reduce's marker, written last);
* ``<layer>/units/uNNNN.png`` (k-patch mosaic, 3×3 for k = 9), ``uNNNN-top1.png`` (64 px) and
  ``uNNNN.json`` (photo sha256, position, score, box per example, statistics);
* ``<layer>/pageNN.png`` / ``.json`` — 8×8 grid of units ``NN*64 …`` top-1 patches, the
  geometry of the pattern grids (547 px, row-major);
* ``runs/<run>/examples.json`` — a run's summary, one row per layer (:func:`reduce_run`).

The reduce merges the state with every batch file not merged yet (found by listing, so a batch
whose reduce was lost is merged by the next one), renders the pages whose units changed, and
writes the state last; a redelivered reduce changes nothing. Two reduces of the same layer
running at the same moment can each miss the other's batches; the next reduce of that layer
merges them (they are listed, not remembered).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from convatlas.shared import keys
from convatlas.shared.engine.receptive_fields import geometry_for
from convatlas.shared.images.checks import ImageDecodeError
from convatlas.shared.images.decode import decode_photo
from convatlas.shared.images.encode import encode_image, encode_png
from convatlas.shared.jobs.common import JobResult, io_map, json_bytes, read_json
from convatlas.shared.jobs.examples_map import ExamplesJob, batch_key
from convatlas.shared.patches import CROP_SIDE, mosaic_side, patch
from convatlas.shared.storage import ObjectNotFound, Storage
from convatlas.shared.topk import TopK
from convatlas.shared.unit_stats import UnitStats

UNITS_PER_PAGE = 64
TILE = 96  # side of one patch in a unit's mosaic (3×3: 298 px)
PHOTO_CACHE = 48  # decoded photos kept across a layer's pages (≈ 1.7 MB each at 768 px)
TOP1_TILE = 64  # side of a unit's top-1 patch on a layer page (as pattern tiles)
SCORE = ("the channel's maximum over positions of the layer's output, on the photo resized to "
         "the model's square input; position = its first arg-max in row-major order")


@dataclass(frozen=True)
class ExamplesReduceJob:
    """Merge one layer's new batches into its top-k; render the unit mosaics and pages."""

    model: str
    weights_id: str
    layer: str
    units: int
    top: int = 9
    side: int = 224
    precision: str = "float32"

    kind = "examples-reduce"

    @property
    def prefix(self) -> str:
        return keys.examples_prefix(self.model, self.weights_id, self.side, self.top,
                                    self.precision)

    @property
    def layer_prefix(self) -> str:
        return keys.examples_layer_prefix(self.prefix, self.layer)

    @property
    def marker(self) -> str:
        return f"{self.layer_prefix}/state.json"

    def unit_key(self, unit: int, suffix: str = ".png") -> str:
        return f"{self.layer_prefix}/units/u{unit:04d}{suffix}"

    def page_key(self, page: int, ext: str = "png") -> str:
        return f"{self.layer_prefix}/page{page:02d}.{ext}"

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.units / UNITS_PER_PAGE))

    def outputs(self) -> dict[str, str]:
        return {"state": self.marker, **{f"page{p}": self.page_key(p) for p in range(self.pages)}}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExamplesReduceJob:
        return cls(**{k: v for k, v in d.items() if k != "kind"})


@dataclass(eq=False)
class LayerState:
    topk: TopK
    stats: UnitStats
    batches: set[str]

    @classmethod
    def empty(cls, units: int, k: int) -> LayerState:
        return cls(TopK.empty(units, k), UnitStats.empty(units), set())

    def absorb(self, batch: dict[str, Any]) -> bool:
        """Merge one batch file; False (and nothing changes) when it was merged before."""
        if batch["batch"] in self.batches:
            return False
        self.topk = self.topk.merge(TopK.from_json(batch["topk"]))
        self.stats = self.stats.add(UnitStats.from_json(batch["stats"]))
        self.batches.add(batch["batch"])
        return True

    def to_json(self, job: ExamplesReduceJob) -> dict[str, Any]:
        return {"model": job.model, "layer": job.layer, "units": job.units, "k": job.top,
                "side": job.side, "precision": job.precision, "score": SCORE,
                "batches": sorted(self.batches), "topk": self.topk.to_json(),
                "stats": self.stats.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerState:
        return cls(TopK.from_json(d["topk"]), UnitStats.from_json(d["stats"]), set(d["batches"]))


def _render_page(
    job: ExamplesReduceJob, state: LayerState, page: int, storage: Storage, geometry: Any,
    photo: Callable[[str], np.ndarray | None],
) -> list[str]:
    """Mosaics, top-1 patches and records of one page's units, then the page; returns the
    photos that could not be read (their tiles stay black)."""
    from convatlas.shared.render import assemble_grid

    units = range(page * UNITS_PER_PAGE, min(job.units, (page + 1) * UNITS_PER_PAGE))
    wanted: dict[str, list[tuple[int, int, tuple[int, int]]]] = {}
    for u in units:
        for rank, c in enumerate(state.topk.candidates(u)):
            wanted.setdefault(c.image_sha256, []).append((u, rank, c.position))
    side_hw = (job.side, job.side)

    def crops(sha: str) -> list[tuple[int, int, np.ndarray]] | None:
        base = photo(sha)
        if base is None:
            return None
        return [(u, rank, patch(base, geometry.box(*pos), side_hw, TILE))
                for u, rank, pos in wanted[sha]]

    tiles: dict[int, dict[int, np.ndarray]] = {u: {} for u in units}
    missing: list[str] = []
    shas = sorted(wanted)
    for sha, got in zip(shas, io_map(crops, shas), strict=True):
        if got is None:
            missing.append(sha)
            continue
        for u, rank, tile in got:
            tiles[u][rank] = tile
    n = mosaic_side(job.top)
    top1: dict[int, np.ndarray] = {}

    def write_unit(u: int) -> None:
        mosaic = assemble_grid(tiles[u], tile=TILE, n=n)
        storage.put_bytes(job.unit_key(u), encode_image(mosaic, "png").data, "image/png")
        first = tiles[u].get(0)
        small = (np.zeros((TOP1_TILE, TOP1_TILE, 3), np.uint8) if first is None else
                 cv2.resize(first, (TOP1_TILE, TOP1_TILE), interpolation=cv2.INTER_AREA))
        top1[u - page * UNITS_PER_PAGE] = small
        storage.put_bytes(job.unit_key(u, "-top1.png"), encode_image(small, "png").data, "image/png")
        examples = []
        for rank, c in enumerate(state.topk.candidates(u)):
            t, left, b, r = geometry.box(*c.position)
            examples.append({
                "rank": rank, "image_sha256": c.image_sha256,
                "name": state.topk.names.get(c.image_sha256, ""),
                "position": list(c.position), "score": c.score,
                "box": [t, left, b, r],
                "box_fraction": [t / job.side, left / job.side, b / job.side, r / job.side],
                "missing": c.image_sha256 in missing,
            })
        record = {"model": job.model, "layer": job.layer, "unit": u, "k": job.top,
                  "score": SCORE, "input_side": job.side, "rf": list(geometry.rf),
                  "map": list(geometry.shape), "examples": examples,
                  "stats": state.stats.unit(u), "mosaic": job.unit_key(u),
                  "top1": job.unit_key(u, "-top1.png")}
        storage.put_bytes(job.unit_key(u, ".json"), json_bytes(record), "application/json")

    io_map(write_unit, list(units))
    grid = assemble_grid(top1, tile=TOP1_TILE)
    storage.put_bytes(job.page_key(page), encode_png(grid), "image/png")
    info = {"model": job.model, "layer": job.layer, "page": page, "units": list(units),
            "order": f"row-major: tile (row, col) shows unit page*{UNITS_PER_PAGE} + row*8 + col",
            "size": list(grid.shape[:2]), "missing_photos": missing}
    storage.put_bytes(job.page_key(page, "json"), json_bytes(info), "application/json")
    return missing


def reduce_examples(
    job: ExamplesReduceJob, storage: Storage, crop_side: int = CROP_SIDE
) -> JobResult:
    """Merge the layer's unmerged batches into its state; re-render the pages that changed
    (or are missing); write the state last."""
    from convatlas.shared.models.registry import get_model

    prior = read_json(storage, job.marker)
    state = (LayerState.from_json(prior) if prior is not None
             else LayerState.empty(job.units, job.top))
    before = state.topk.key()
    present = set(storage.list_keys(f"{job.layer_prefix}/"))
    batch_folder = f"{job.layer_prefix}/batches/"
    new = sorted(k for k in present if k.startswith(batch_folder) and k.endswith(".json")
                 and k[len(batch_folder):-len(".json")] not in state.batches)
    merged = 0
    chunk = 8  # batch files in memory at once
    for i in range(0, len(new), chunk):
        for body in io_map(lambda k: read_json(storage, k), new[i : i + chunk]):
            if body is not None and state.absorb(body):
                merged += 1
    after = state.topk.key()
    changed = {u for u in range(job.units) if before[u] != after[u]}
    pages = sorted({u // UNITS_PER_PAGE for u in changed}
                   | {p for p in range(job.pages) if job.page_key(p, "json") not in present})
    info: dict[str, Any] = {"layer": job.layer, "units": job.units, "photos": state.stats.count,
                            "merged_batches": merged, "batches": len(state.batches),
                            "rendered_pages": pages, "pages": job.pages}
    if prior is not None and not merged and not pages:
        return JobResult("skipped", job.outputs(), None, info)
    t0 = time.perf_counter()
    geometry = geometry_for(get_model(job.model), job.layer, job.side)

    @functools.lru_cache(maxsize=PHOTO_CACHE)
    def photo(sha: str) -> np.ndarray | None:
        """The photo at ``crop_side`` (a reduced decode), kept for the next pages."""
        try:
            data = storage.get_bytes(keys.input_key(sha))
            return decode_photo(data, overlay_max_side=crop_side).overlay_base
        except (ObjectNotFound, ImageDecodeError):
            return None

    missing: list[str] = []
    for p in pages:
        missing += _render_page(job, state, p, storage, geometry, photo)
    info["render_seconds"] = time.perf_counter() - t0
    info["missing_photos"] = sorted(set(missing))
    storage.put_bytes(job.marker, json_bytes(state.to_json(job)), "application/json")
    return JobResult("done", job.outputs(), None, info)


# --- a run's reduces (fleet and local) ----------------------------------------------------------


def summary_key(run_id: str) -> str:
    """Where a run's examples summary (one row per layer) is written after its reduces."""
    return f"{keys.run_prefix(run_id)}/examples.json"


def _manifest(storage: Storage, run_id: str) -> dict[str, Any]:
    from convatlas.shared.manifest import load_manifest

    return load_manifest(storage, run_id)


def manifest_reduces(manifest: dict[str, Any]) -> list[ExamplesReduceJob]:
    return [ExamplesReduceJob.from_dict(d) for d in manifest.get("examples_reduces", [])]


def _maps(storage: Storage, manifest: dict[str, Any]) -> list[ExamplesJob]:
    from convatlas.shared.manifest import iter_jobs

    return [ExamplesJob.from_dict(d) for d in iter_jobs(storage, manifest)
            if d.get("kind") == "examples"]


def examples_done(storage: Storage, manifest: dict[str, Any]) -> bool:
    """Every layer's state holds every batch of the run's finished maps for that layer."""
    maps = _maps(storage, manifest)
    for r in manifest_reduces(manifest):
        state = read_json(storage, r.marker)
        if state is None:
            return False
        have = set(state["batches"])
        for m in maps:
            if r.layer in m.layers and m.batch_id not in have and storage.exists(
                    batch_key(m.prefix, r.layer, m.batch_id)):
                return False
    return True


def reduce_run(storage: Storage, run_id: str) -> dict[str, Any]:
    """Reduce every layer of a run, then write its summary (``summary_key``)."""
    manifest = _manifest(storage, run_id)
    rows = []
    for r in manifest_reduces(manifest):
        res = reduce_examples(r, storage)
        rows.append({"layer": r.layer, "status": res.status, **res.info,
                     "pages_png": [r.page_key(p) for p in range(r.pages)]})
    summary = {"run_id": run_id, "model": manifest.get("model"), "layers": rows,
               "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    storage.put_bytes(summary_key(run_id), json_bytes(summary), "application/json")
    return summary
