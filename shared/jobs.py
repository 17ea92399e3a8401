"""Job functions: the units of work, run the same way by the local CLI and by Celery workers.

A job is a small JSON-able description (``FilterJob``, ``GradcamJob``); its outputs live under a
key derived from it (``convatlas.shared.keys``), so a job whose outputs exist is skipped, and a list of jobs
is run in as few model calls as possible (grouped by model and layer, then batched). Every job
succeeds or fails on its own: one corrupt photo fails that photo, not its batch.

Each job writes its data files first and a small JSON marker last; the marker's presence means
"done" (``record.json``) or "failed for good" (``error.json``).
"""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any, TypeVar

import numpy as np

from convatlas.shared import keys
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.images import ImageDecodeError, decode_image, encode_png
from convatlas.shared.storage import ObjectNotFound, Storage


def pattern_params(job: FilterJob | GridJob) -> PatternParams:
    """The ``PatternParams`` a job carries as flat JSON-able fields of the same names."""
    return PatternParams(**{f.name: getattr(job, f.name) for f in fields(PatternParams)})


@dataclass(frozen=True)
class FilterJob:
    model: str
    weights_id: str
    layer: str
    filter: int
    size: int = 64
    steps: int = 40
    step_size: float = 1.0
    seed: int = 0
    fallback: str = "preactivation"
    precision: str = "float32"

    kind = "filter"

    @property
    def params(self) -> PatternParams:
        return pattern_params(self)

    @property
    def prefix(self) -> str:
        return keys.pattern_prefix(self.model, self.weights_id, self.layer, self.params.slug())

    @property
    def marker(self) -> str:
        return keys.pattern_key(self.prefix, self.filter, "json")

    @property
    def error_key(self) -> str:
        return keys.pattern_key(self.prefix, self.filter, "error.json")

    def outputs(self) -> dict[str, str]:
        return {
            "png": keys.pattern_key(self.prefix, self.filter, "png"),
            "npy": keys.pattern_key(self.prefix, self.filter, "npy"),
            "record": self.marker,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class GradcamJob:
    model: str
    weights_id: str
    image_sha: str
    class_index: int | None = None  # None = top-1
    layer: str | None = None  # None = last conv feature map
    name: str = ""  # display name of the photo (never used in keys)
    precision: str = "float32"  # of the network pass (convatlas.shared.engine.precision)

    kind = "gradcam"

    @property
    def prefix(self) -> str:
        return keys.gradcam_prefix(
            self.model, self.weights_id, self.image_sha, self.class_index, self.layer,
            self.precision,
        )

    @property
    def marker(self) -> str:
        return f"{self.prefix}/record.json"

    @property
    def error_key(self) -> str:
        return f"{self.prefix}/error.json"

    def outputs(self) -> dict[str, str]:
        p = self.prefix
        return {
            "heatmap": f"{p}/heatmap.png",
            "overlay": f"{p}/overlay.png",
            "cam": f"{p}/cam.npy",
            "record": self.marker,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


Job = FilterJob | GradcamJob


def job_from_dict(d: dict[str, Any]) -> Job:
    d = dict(d)
    kind = d.pop("kind")
    if kind == "filter":
        return FilterJob(**d)
    if kind == "gradcam":
        return GradcamJob(**d)
    raise ValueError(f"unknown job kind {kind!r}")


@dataclass
class JobResult:
    status: str  # "done" | "skipped" (already done) | "failed"
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


T = TypeVar("T")
R = TypeVar("R")
IO_THREADS = 8  # storage round trips overlap; the model waits for them otherwise


def io_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` with storage calls overlapped in threads (order kept; the
    first exception, e.g. ``StorageUnavailable``, propagates as in the plain loop)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(IO_THREADS, len(items)), thread_name_prefix="convatlas-io") as ex:
        return list(ex.map(fn, items))


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def read_json(storage: Storage, key: str) -> dict[str, Any] | None:
    """A JSON object, or None when it does not exist: one GET, not a HEAD then a GET."""
    try:
        return json.loads(storage.get_bytes(key))
    except ObjectNotFound:
        return None


def existing_result(job: Job, storage: Storage) -> JobResult | None:
    """The recorded outcome of a job, if it has one (done or failed for good)."""
    info = read_json(storage, job.marker)
    if info is not None:
        return JobResult("skipped", job.outputs(), None, info)
    err = read_json(storage, job.error_key)
    if err is not None:
        return JobResult("failed", {}, err.get("error", "failed"), err)
    return None


def record_failure(job: Job, storage: Storage, error: str) -> JobResult:
    """A permanent failure (bad input): recorded so reports and re-runs see it."""
    storage.put_bytes(
        job.error_key, _json_bytes({"error": error, "job": job.to_dict()}), "application/json"
    )
    return JobResult("failed", {}, error)


# --- filter patterns -----------------------------------------------------------------------------


def _write_pattern(
    storage: Storage, pair: tuple[FilterJob, Any], *, seconds: float, batch: int
) -> JobResult:
    """Data first, the ``.json`` marker last: a marker means the PNG and .npy are complete."""
    job, p = pair
    out = job.outputs()
    info = {
        "filter": job.filter,
        "layer": job.layer,
        "model": job.model,
        "dead": p.dead,
        "fallback_used": p.fallback_used,
        "start_activation": p.start_activation,
        "final_activation": p.final_activation,
        "precision": job.precision,
        "seconds": seconds,
        "batch": batch,
    }
    storage.put_bytes(out["png"], encode_png(p.image), "image/png")
    storage.put_bytes(out["npy"], _npy_bytes(p.raw), "application/octet-stream")
    storage.put_bytes(out["record"], _json_bytes(info), "application/json")
    return JobResult("done", out, None, info)


def run_filter_jobs(jobs: list[FilterJob], storage: Storage, batch_size: int = 64) -> list[JobResult]:
    """Run filter jobs, skipping finished ones; one batched model call per (model, layer, params)."""
    from convatlas.shared.engine.patterns import filter_patterns
    from convatlas.shared.models.registry import get_model

    results: list[JobResult | None] = io_map(lambda j: existing_result(j, storage), jobs)
    groups: dict[tuple[str, str, PatternParams], list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        if results[i] is None:
            groups[(job.model, job.layer, job.params)].append(i)
    for (model, layer, params), idx in groups.items():
        lm = get_model(model)
        t0 = time.perf_counter()
        wanted = sorted({jobs[i].filter for i in idx})
        patterns = {p.filter: p for p in filter_patterns(lm, layer, wanted, params, batch_size)}
        seconds = (time.perf_counter() - t0) / max(1, len(wanted))

        write = partial(_write_pattern, storage, seconds=seconds, batch=len(wanted))
        pairs = [(jobs[i], patterns[jobs[i].filter]) for i in idx]
        for i, res in zip(idx, io_map(write, pairs), strict=True):
            results[i] = res
    return [r for r in results if r is not None]


# --- Grad-CAM ------------------------------------------------------------------------------------


def _write_cam(
    storage: Storage, triple: tuple[GradcamJob, np.ndarray, Any], *, score_kind: str,
    seconds: float, batch: int,
) -> JobResult:
    """Heatmap, overlay and raw map first, ``record.json`` (the marker) last."""
    from convatlas.shared.render import colorize, overlay

    job, photo, cam = triple
    h, w = photo.shape[:2]
    out = job.outputs()
    record = {
        "model": job.model,
        "weights_id": job.weights_id,
        "image_sha256": job.image_sha,
        "image_name": job.name,
        "image_size": [w, h],
        "layer": cam.layer,
        "class_index": cam.class_index,
        "class_requested": job.class_index,
        "score": cam.score,
        "score_kind": score_kind,
        "empty_heatmap": cam.empty,
        "precision": job.precision,
        "heatmap_peak": cam.peak,
        "heatmap_shape": list(cam.heatmap.shape),
        "top": [asdict(p) for p in cam.top],
        "seconds": seconds,
        "batch": batch,
    }
    storage.put_bytes(out["heatmap"], encode_png(colorize(cam.heatmap, w, h)), "image/png")
    storage.put_bytes(out["overlay"], encode_png(overlay(photo, cam.heatmap)), "image/png")
    storage.put_bytes(out["cam"], _npy_bytes(cam.heatmap), "application/octet-stream")
    storage.put_bytes(out["record"], _json_bytes(record), "application/json")
    return JobResult("done", out, None, record)


def run_gradcam_jobs(jobs: list[GradcamJob], storage: Storage, batch_size: int = 16) -> list[JobResult]:
    """Run Grad-CAM jobs: decode each photo (failing it alone if bad), then batch the rest."""
    from convatlas.shared.engine.gradcam import grad_cam
    from convatlas.shared.models.registry import get_model

    def load(job: GradcamJob) -> JobResult | np.ndarray:
        """The recorded outcome, or the decoded photo (a bad one fails here, alone)."""
        done = existing_result(job, storage)
        if done is not None:
            return done
        try:
            data = storage.get_bytes(keys.input_key(job.image_sha))
        except ObjectNotFound:
            return record_failure(job, storage, "input image not found in storage")
        try:
            return decode_image(data)
        except ImageDecodeError as exc:
            return record_failure(job, storage, f"bad image: {exc.reason}")

    results: list[JobResult | None] = []
    photos: dict[int, np.ndarray] = {}
    for i, got in enumerate(io_map(load, jobs)):
        results.append(got if isinstance(got, JobResult) else None)
        if isinstance(got, np.ndarray):
            photos[i] = got

    groups: dict[tuple[str, str | None, str], list[int]] = defaultdict(list)
    for i in photos:
        groups[(jobs[i].model, jobs[i].layer, jobs[i].precision)].append(i)
    for (model, layer, precision), idx in groups.items():
        lm = get_model(model)
        t0 = time.perf_counter()
        cams = grad_cam(lm, [photos[i] for i in idx], [jobs[i].class_index for i in idx], layer,
                        batch_size, precision=precision)
        seconds = (time.perf_counter() - t0) / len(idx)
        builtin = lm.spec.name in ("vgg16", "efficientnet-lite0")
        score_kind = "logit (pre-softmax)" if builtin else "the model's output"

        write = partial(_write_cam, storage, score_kind=score_kind, seconds=seconds,
                        batch=len(idx))
        triples = [(jobs[i], photos[i], cam) for i, cam in zip(idx, cams, strict=True)]
        for i, res in zip(idx, io_map(write, triples), strict=True):
            results[i] = res
    return [r for r in results if r is not None]


# --- reducer -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridJob:
    """One 8×8 page of a layer: tiles are filters ``page*64 .. page*64+63`` (row-major)."""

    model: str
    weights_id: str
    layer: str
    page: int
    filters: tuple[int, ...]
    size: int = 64
    steps: int = 40
    step_size: float = 1.0
    seed: int = 0
    fallback: str = "preactivation"
    precision: str = "float32"

    kind = "grid"

    def tile_jobs(self) -> list[FilterJob]:
        params = asdict(self.params)
        return [FilterJob(self.model, self.weights_id, self.layer, f, **params) for f in self.filters]

    @property
    def params(self) -> PatternParams:
        return pattern_params(self)

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
        d = asdict(self)
        d["filters"] = list(self.filters)
        return {"kind": self.kind, **d}


def grid_from_dict(d: dict[str, Any]) -> GridJob:
    """Inverse of ``GridJob.to_dict`` (JSON has lists, the job a tuple)."""
    d = dict(d)
    d.pop("kind", None)
    d["filters"] = tuple(d["filters"])
    return GridJob(**d)


def reduce_grid(job: GridJob, storage: Storage) -> JobResult:
    """Assemble a page from its tiles; a missing or failed tile stays black and is listed.

    A complete grid is final (skipped on re-runs); an incomplete one is rebuilt each time the
    reducer runs, so a tile that arrives later (retry) completes the grid.
    """
    from convatlas.shared.render import assemble_grid

    info = read_json(storage, job.marker)
    if info is not None and not info.get("missing"):
        return JobResult("skipped", job.outputs(), None, info)

    def load(tile: FilterJob) -> tuple[np.ndarray | None, bool]:
        """(the tile's image or None when missing or bad, whether the filter was dead)."""
        try:
            img = decode_image(storage.get_bytes(tile.outputs()["png"]))
        except (ObjectNotFound, ImageDecodeError):
            return None, False
        if img.shape != (job.size, job.size, 3):
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
        tiles[tile.filter - job.page * 64] = img
        if is_dead:
            dead.append(tile.filter)
    grid = assemble_grid(tiles, tile=job.size)
    info = {
        "model": job.model,
        "layer": job.layer,
        "page": job.page,
        "filters": list(job.filters),
        "missing": missing,
        "dead": dead,
        "order": "row-major: tile (row, col) shows filter page*64 + row*8 + col",
        "size": list(grid.shape[:2]),
    }
    out = job.outputs()
    storage.put_bytes(out["png"], encode_png(grid), "image/png")
    storage.put_bytes(out["record"], _json_bytes(info), "application/json")
    return JobResult("done", out, None, info)
