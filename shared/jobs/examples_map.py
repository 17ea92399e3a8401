"""Dataset-examples map jobs: one batch of photos through the trunk, its candidates per layer.

The engine is ``convatlas.shared.engine.unit_maxima``; the per-layer reduce that merges the
candidates and renders the pages is ``convatlas.shared.jobs.examples_reduce``.

Layout under ``keys.examples_prefix(model, weights, side, k, precision)`` written here:

* ``maps/<batch>.json`` — a map job's marker (its photos, the ones that failed and why);
* ``photos/<layerset>/<sha256>.json`` — one per photo and layer set: the photo was seen (or
  failed, with the reason) for those layers; ``layersets/<layerset>.json`` names the layers.
  The planner lists these to queue only photos (and layers) not seen before;
* ``<layer>/batches/<batch>.json`` — a map's candidates for one layer (top-k per unit of its
  photos, and their score statistics).

A map writes its candidate files, then the photo markers, then its own marker; a redelivered
map changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from convatlas.shared import keys
from convatlas.shared.backend_select import active_backend
from convatlas.shared.engine.unit_maxima import channel_maxima
from convatlas.shared.images.checks import ImageDecodeError
from convatlas.shared.images.decode import decode_for_model
from convatlas.shared.jobs.common import JobResult, existing_result, io_map, json_bytes
from convatlas.shared.jobs.stages import Stages
from convatlas.shared.storage import ObjectNotFound, Storage
from convatlas.shared.topk import TopK
from convatlas.shared.unit_stats import UnitStats

MODEL_BATCH = 64  # photos per model call at most


def layerset_id(layers: tuple[str, ...] | list[str]) -> str:
    return keys.short_hash(sorted(layers), 12)


def photo_marker(prefix: str, lsid: str, sha: str) -> str:
    keys.input_key(sha)  # validates the hash
    return f"{prefix}/photos/{lsid}/{sha}.json"


def batch_key(prefix: str, layer: str, batch_id: str) -> str:
    return f"{keys.examples_layer_prefix(prefix, layer)}/batches/{batch_id}.json"


@dataclass(frozen=True)
class ExamplesJob:
    """A map job: one batch of photos (by sha256) through the trunk up to its deepest layer."""

    model: str
    weights_id: str
    layers: tuple[str, ...]
    images: tuple[str, ...]
    names: tuple[str, ...] = ()  # display names, parallel to ``images`` (never in keys)
    top: int = 9
    side: int = 224
    precision: str = "float32"

    kind = "examples"

    @property
    def prefix(self) -> str:
        return keys.examples_prefix(self.model, self.weights_id, self.side, self.top,
                                    self.precision)

    @property
    def batch_id(self) -> str:
        return keys.short_hash({"layers": list(self.layers), "images": list(self.images)})

    @property
    def marker(self) -> str:
        return f"{self.prefix}/maps/{self.batch_id}.json"

    @property
    def error_key(self) -> str:
        return f"{self.prefix}/maps/{self.batch_id}.error.json"

    def outputs(self) -> dict[str, str]:
        out = {f"candidates:{layer}": batch_key(self.prefix, layer, self.batch_id)
               for layer in self.layers}
        return {**out, "record": self.marker}

    def outcome_folders(self) -> tuple[str, str]:
        folder = f"{self.prefix}/maps/"
        return folder, folder

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(layers=list(self.layers), images=list(self.images), names=list(self.names))
        return {"kind": self.kind, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExamplesJob:
        rest = {k: v for k, v in d.items() if k != "kind"}
        for name in ("layers", "images", "names"):
            rest[name] = tuple(rest.get(name, ()))
        return cls(**rest)

    def name_of(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else ""


def _units(lm: Any, layer: str) -> int:
    return int(lm.model.get_layer(layer).output.shape[-1])


@dataclass(eq=False)
class Loaded:
    """A map job's photos, decoded (model inputs), and the ones that failed with the reason."""

    inputs: dict[int, np.ndarray]  # index in job.images → side×side×3 uint8
    failed: list[dict[str, Any]]
    seconds: float


@dataclass(eq=False)
class Mapped:
    """What the model gave for one map job: the top-k and statistics per layer."""

    tops: dict[str, TopK]
    stats: dict[str, UnitStats]
    photos: int


def prepare(job: ExamplesJob, storage: Storage) -> JobResult | Loaded:
    """The job's recorded outcome, or its photos decoded for the model (reduced decodes, in
    threads); a bad or missing photo fails alone here."""
    done = existing_result(job, storage)
    if done is not None:
        return done
    t0 = time.perf_counter()

    def load(i: int) -> np.ndarray | str:
        try:
            data = storage.get_bytes(keys.input_key(job.images[i]))
        except ObjectNotFound:
            return "input image not found in storage"
        try:
            got = decode_for_model(data, job.side).model_input
        except ImageDecodeError as exc:
            return f"bad image: {exc.reason}"
        assert got is not None
        return got

    loaded = io_map(load, range(len(job.images)))
    return Loaded({i: got for i, got in enumerate(loaded) if isinstance(got, np.ndarray)},
                  [{"image_sha256": job.images[i], "name": job.name_of(i), "error": got}
                   for i, got in enumerate(loaded) if isinstance(got, str)],
                  time.perf_counter() - t0)


def compute(jobs: list[ExamplesJob], loaded: list[Loaded], batch_size: int = MODEL_BATCH) -> list[Mapped]:
    """The model calls: per job, its photos through the trunk in one pass per ``MODEL_BATCH``."""
    from convatlas.shared.models.registry import get_model

    out = []
    for job, got in zip(jobs, loaded, strict=True):
        lm = get_model(job.model)
        ok = sorted(got.inputs)
        names = {job.images[i]: job.name_of(i) for i in ok if job.name_of(i)}
        tops = {layer: TopK.empty(_units(lm, layer), job.top) for layer in job.layers}
        stats = {layer: UnitStats.empty(_units(lm, layer)) for layer in job.layers}
        for start in range(0, len(ok), MODEL_BATCH):
            idx = ok[start : start + MODEL_BATCH]
            x = np.stack([got.inputs[i] for i in idx])
            shas = [job.images[i] for i in idx]
            for layer, (scores, pos, _) in channel_maxima(lm, job.layers, x, job.precision).items():
                tops[layer] = tops[layer].merge(TopK.from_scores(shas, scores, pos, job.top, names))
                stats[layer] = stats[layer].add(UnitStats.from_scores(scores))
        out.append(Mapped(tops, stats, len(ok)))
    return out


def write(job: ExamplesJob, loaded: Loaded, mapped: Mapped, storage: Storage,
          info: dict[str, Any]) -> JobResult:
    """The candidates per layer, then the photo markers, then the job's marker."""

    def put_layer(layer: str) -> None:
        body = {"batch": job.batch_id, "layer": layer, "photos": mapped.photos,
                "topk": mapped.tops[layer].to_json(), "stats": mapped.stats[layer].to_json()}
        # compact: only the reducer reads it, and indenting a 1280-unit layer's candidates
        # cost 4x the encoding time and 3.6x the bytes (1.1 MB a batch)
        storage.put_bytes(batch_key(job.prefix, layer, job.batch_id),
                          json.dumps(body, separators=(",", ":")).encode(), "application/json")

    io_map(put_layer, job.layers)
    lsid = layerset_id(job.layers)
    storage.put_bytes(f"{job.prefix}/layersets/{lsid}.json",
                      json_bytes({"layers": sorted(job.layers)}), "application/json")
    errors = {f["image_sha256"]: f["error"] for f in loaded.failed}

    def put_photo(i: int) -> None:
        sha = job.images[i]
        body: dict[str, Any] = {"batch": job.batch_id, "name": job.name_of(i)}
        if sha in errors:
            body["error"] = errors[sha]
        storage.put_bytes(photo_marker(job.prefix, lsid, sha), json_bytes(body), "application/json")

    io_map(put_photo, range(len(job.images)))
    record = {"model": job.model, "layers": list(job.layers), "batch_id": job.batch_id,
              "photos": mapped.photos, "failed": loaded.failed, "top": job.top,
              "side": job.side, "precision": job.precision, "backend": active_backend(), "decode_seconds": loaded.seconds,
              **info}
    storage.put_bytes(job.marker, json_bytes(record), "application/json")
    return JobResult("done", job.outputs(), None, record)


STAGES = Stages(prepare, compute, write)


def run_examples_jobs(
    jobs: list[ExamplesJob], storage: Storage, batch_size: int = 32
) -> list[JobResult]:
    """Run map jobs in order, each job's photos decoded while the previous job computes (one
    job ahead) and its files written while the next computes. Each job is one batch of photos
    (``MODEL_BATCH`` per model call at most), so ``batch_size`` is not used."""
    from concurrent.futures import Future, ThreadPoolExecutor

    results: list[JobResult] = []
    ahead: list[Future[JobResult | Loaded]]
    writes: list[Future[JobResult] | None] = []
    with ThreadPoolExecutor(1, thread_name_prefix="examples-load") as loader, \
            ThreadPoolExecutor(1, thread_name_prefix="examples-write") as writer:
        ahead = [loader.submit(prepare, j, storage) for j in jobs[:1]]
        for n, job in enumerate(jobs):
            got = ahead[n].result()
            if n + 1 < len(jobs):
                ahead.append(loader.submit(prepare, jobs[n + 1], storage))
            if isinstance(got, JobResult):
                writes.append(None)
                results.append(got)
                continue
            t0 = time.perf_counter()
            (mapped,) = compute([job], [got])
            info = {"seconds": time.perf_counter() - t0, "batch": mapped.photos}
            writes.append(writer.submit(write, job, got, mapped, storage, info))
            results.append(JobResult("pending"))
        for n, w in enumerate(writes):
            if w is not None:
                results[n] = w.result()
    return results


def report_entry(job: ExamplesJob, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields naming the job, fields from its record when done) for the run report."""
    return ({"name": f"batch {job.batch_id} ({len(job.images)} photos)",
             "layers": list(job.layers), "photos": len(job.images)},
            {"failed_photos": info.get("failed", [])})
