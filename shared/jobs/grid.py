"""Grid-page jobs: the reducer that assembles one layer's 8×8 page from its tiles in storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convatlas.shared import keys
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.images.checks import ImageDecodeError
from convatlas.shared.images.decode import decode_image
from convatlas.shared.images.encode import encode_png
from convatlas.shared.jobs.common import JobResult, io_map, json_bytes, read_json
from convatlas.shared.jobs.patterns import FilterJob, params_from_dict, params_to_dict
from convatlas.shared.render import GRID
from convatlas.shared.storage import ObjectNotFound, Storage

TILES_PER_PAGE = GRID * GRID  # page p holds filters p*64 .. p*64+63


@dataclass(frozen=True)
class GridJob:
    """One 8×8 page of a layer: tiles are filters ``page*64 .. page*64+63`` (row-major)."""

    model: str
    weights_id: str
    layer: str
    page: int
    filters: tuple[int, ...]
    params: PatternParams = field(default_factory=PatternParams)

    kind = "grid"

    def tile_jobs(self) -> list[FilterJob]:
        return [FilterJob(self.model, self.weights_id, self.layer, f, self.params)
                for f in self.filters]

    @property
    def prefix(self) -> str:
        """The folder of its tiles (``FilterJob.prefix``), where the page is written too."""
        return keys.pattern_prefix(self.model, self.weights_id, self.layer, self.params.slug())

    def outputs(self) -> dict[str, str]:
        return {"png": keys.grid_key(self.prefix, self.page), "record": self.marker}

    @property
    def marker(self) -> str:
        return keys.grid_key(self.prefix, self.page, "json")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "weights_id": self.weights_id,
                "layer": self.layer, "page": self.page, "filters": list(self.filters),
                **params_to_dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridJob:
        """Inverse of ``to_dict`` (JSON has lists, the job a tuple)."""
        params, rest = params_from_dict({k: v for k, v in d.items() if k != "kind"})
        rest["filters"] = tuple(rest["filters"])
        return cls(params=params, **rest)


def grid_from_dict(d: dict[str, Any]) -> GridJob:
    return GridJob.from_dict(d)


def reduce_grid(job: GridJob, storage: Storage) -> JobResult:
    """Assemble a page from its tiles; a missing or failed tile stays black and is listed.

    A complete grid is final (skipped on re-runs); an incomplete one is rebuilt each time the
    reducer runs, so a tile that arrives later (retry) completes the grid.
    """
    from convatlas.shared.render import assemble_grid

    info = read_json(storage, job.marker)
    if info is not None and not info.get("missing"):
        return JobResult("skipped", job.outputs(), None, info)
    size = job.params.size

    def load(tile: FilterJob) -> tuple[np.ndarray | None, bool]:
        """(the tile's image or None when missing or bad, whether the filter was dead)."""
        try:
            img = decode_image(storage.get_bytes(tile.outputs()["png"]))
        except (ObjectNotFound, ImageDecodeError):
            return None, False
        if img.shape != (size, size, 3):
            return None, False
        record = read_json(storage, tile.marker) or {}
        return img, bool(record.get("dead"))

    tiles: dict[int, np.ndarray] = {}
    missing: list[int] = []
    dead: list[int] = []
    tile_jobs = job.tile_jobs()
    for tile, (img, is_dead) in zip(tile_jobs, io_map(load, tile_jobs), strict=True):
        if img is None:
            missing.append(tile.filter)
            continue
        tiles[tile.filter - job.page * TILES_PER_PAGE] = img
        if is_dead:
            dead.append(tile.filter)
    grid = assemble_grid(tiles, tile=size)
    info = {
        "model": job.model,
        "layer": job.layer,
        "page": job.page,
        "style": job.params.style,
        "filters": list(job.filters),
        "missing": missing,
        "dead": dead,
        "order": f"row-major: tile (row, col) shows filter page*{TILES_PER_PAGE} + row*{GRID} + col",
        "size": list(grid.shape[:2]),
    }
    out = job.outputs()
    storage.put_bytes(out["png"], encode_png(grid), "image/png")
    storage.put_bytes(out["record"], json_bytes(info), "application/json")
    return JobResult("done", out, None, info)
