"""Planning: turn a user's request into validated jobs, before anything runs or is queued.

Everything the user can get wrong (model, layer, filter range, class, files) is checked here and
refused with the valid choices listed, so a bad request never reaches a queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convatlas.shared import keys
from convatlas.shared.config import Settings
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.engine.precision import check_precision
from convatlas.shared.hashing import file_sha256, sha256_file
from convatlas.shared.images import IMAGE_SUFFIXES
from convatlas.shared.jobs import TILES_PER_PAGE, GradcamJob, GridJob, Job, job_from_dict
from convatlas.shared.manifest import SHARD_SIZE


class PlanError(ValueError):
    """The request is invalid; the message says why and what is valid."""


@dataclass
class InputFile:
    path: Path
    name: str  # as shown to the user (relative to the folder given)
    sha256: str
    size: int


@dataclass
class Shard:
    """One piece of a plan, as written to ``runs/<id>/manifest/shard-NNNNN.json``."""

    offset: int  # the run-wide index of its first job
    jobs: list[Job] = field(default_factory=list)
    inputs: list[InputFile] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "jobs": [j.to_dict() for j in self.jobs],
                "inputs": [_input_dict(f) for f in self.inputs],
                "rejected": [{"name": n, "error": r} for n, r in self.rejected]}


def _input_dict(f: InputFile) -> dict[str, Any]:
    return {"name": f.name, "sha256": f.sha256, "bytes": f.size}


def _chunks(n: int, size: int) -> int:
    return -(-n // size)


@dataclass
class Plan:
    kind: str  # "grids" | "heatmaps"
    model: str
    jobs: list[Job]
    grids: list[GridJob] = field(default_factory=list)
    inputs: list[InputFile] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    run_id: str = ""

    @property
    def total(self) -> int:
        return len(self.jobs)

    def _input_shards(self, size: int) -> int:
        return max(_chunks(len(self.inputs), size), _chunks(len(self.rejected), size))

    def shard_count(self, size: int = SHARD_SIZE) -> int:
        return max(1, self._input_shards(size) + _chunks(len(self.jobs), size))

    def shards(self, size: int = SHARD_SIZE) -> Iterator[Shard]:
        """The plan in ``shard_count(size)`` pieces: first the inputs (and refused files), then
        the jobs. A submission uploads a shard's inputs before it queues that shard's jobs, and
        a job may read any input (an examples job reads a batch of 32 photos from anywhere in
        the folder), so no job may come before the last input."""
        k = self._input_shards(size)
        for n in range(k):
            a, b = n * size, (n + 1) * size
            yield Shard(0, [], self.inputs[a:b], self.rejected[a:b])
        for n in range(self.shard_count(size) - k):
            a, b = n * size, (n + 1) * size
            yield Shard(a, self.jobs[a:b])

    def iter_rejected(self) -> Iterator[tuple[str, str]]:
        return iter(self.rejected)

    def header(self, size: int = SHARD_SIZE) -> dict[str, Any]:
        """The manifest's header (``convatlas.shared.manifest``): everything but the shards."""
        return {"run_id": self.run_id, "kind": self.kind, "model": self.model,
                "grids": [g.to_dict() for g in self.grids], "jobs_total": self.total,
                "rejected_total": len(self.rejected), "shards": self.shard_count(size),
                "shard_size": size}

    def manifest(self) -> dict:
        """The whole manifest as one inline document (small plans, tests)."""
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "model": self.model,
            "jobs": [j.to_dict() for j in self.jobs],
            "grids": [g.to_dict() for g in self.grids],
            "inputs": [_input_dict(f) for f in self.inputs],
            "rejected": [{"name": n, "error": r} for n, r in self.rejected],
        }


class RunHash:
    """A run id from its job markers, independent of their order and built one marker at a
    time: the sum modulo 2^256 of each marker's sha256 (markers are distinct within a run)."""

    def __init__(self, kind: str) -> None:
        self.kind, self.total = kind, 0

    def add(self, marker: str) -> None:
        self.total = (self.total + int.from_bytes(hashlib.sha256(marker.encode()).digest(), "big")) % (1 << 256)

    def run_id(self) -> str:
        return f"{self.kind[0]}-{keys.short_hash(f'{self.kind}:{self.total:064x}'.encode(), 12)}"


def model_weights_id(model: str, settings: Settings) -> str:
    """The hash of the weights that will be used, without loading the model."""
    from convatlas.shared.models import zoo

    spec = resolve_model(model)
    path = spec.weights_file(settings)
    if path is None:
        raise PlanError(
            f"{model} has no ImageNet weights on this machine (set CONVATLAS_VGG16_WEIGHTS or "
            f"put {zoo.VGG16_WEIGHTS_NAME} in ~/.keras/models). Offline models: "
            f"{', '.join(zoo.OFFLINE_MODELS)}"
        )
    return file_sha256(path)


def resolve_model(model: str):  # noqa: ANN201
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


def _run_id(kind: str, jobs: list[Job]) -> str:
    h = RunHash(kind)
    for j in jobs:
        h.add(j.marker)
    return h.run_id()


def plan_grids(
    model: str, layers: str, filters: str, params: PatternParams, settings: Settings
) -> Plan:
    resolve_model(model)
    wid = model_weights_id(model, settings)
    jobs: list[Job] = []
    grids: list[GridJob] = []
    for layer, channels in parse_layers(model, layers):
        chosen = parse_filters(filters, channels)
        for page in sorted({f // TILES_PER_PAGE for f in chosen}):
            on_page = tuple(f for f in chosen if f // TILES_PER_PAGE == page)
            grid = GridJob(model, wid, layer, page, on_page, params)
            grids.append(grid)
            jobs.extend(grid.tile_jobs())
    plan = Plan("grids", model, jobs, grids)
    plan.run_id = _run_id("grids", jobs)
    return plan


def resolve_class(model: str, cls: str | None) -> int | None:
    if cls is None or cls == "" or cls == "top1":
        return None
    from convatlas.shared.models.labels import find_class, imagenet_classes

    try:
        return find_class(cls, imagenet_classes()).index
    except LookupError as exc:
        raise PlanError(str(exc)) from exc


def iter_images(paths: list[str]) -> Iterator[tuple[Path | None, str, str]]:
    """``(path, name, "")`` per image file, ``(None, name, reason)`` per refused one, one at a
    time. Files given directly are taken as they are; folders are scanned recursively (sorted).

    In a folder, a symlink whose target lies outside that folder is refused (a shared folder
    must not leak other files); files with other suffixes are listed as ignored. Every path is
    checked before the first file is yielded (``PlanError``).
    """
    for p in paths:
        if not Path(p).is_dir() and not Path(p).is_file():
            raise PlanError(f"no such file or folder: {p}")
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            yield path, path.name, ""
            continue
        root = path.resolve()
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for fn in sorted(filenames):
                f = Path(dirpath) / fn
                name = str(f.relative_to(path))
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    yield None, name, f"ignored: suffix {f.suffix or '(none)'} is not an image type"
                elif f.is_symlink() and not f.resolve().is_relative_to(root):
                    yield None, name, "refused: symlink points outside the folder"
                elif not f.is_file():
                    yield None, name, "refused: not a regular file"
                else:
                    yield f, name, ""


def collect_images(paths: list[str]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """``iter_images`` as two lists: (path, name) of the images, (name, reason) of the rest."""
    found: list[tuple[Path, str]] = []
    rejected: list[tuple[str, str]] = []
    for path, name, reason in iter_images(paths):
        if path is None:
            rejected.append((name, reason))
        else:
            found.append((path, name))
    return found, rejected


def iter_hashed(paths: list[str]) -> Iterator[InputFile | tuple[str, str]]:
    """Each image of ``paths`` as an ``InputFile`` with its sha256, each file refused or
    unreadable as (name, reason), in ``iter_images`` order, one at a time."""
    for path, name, reason in iter_images(paths):
        if path is None:
            yield name, reason
            continue
        try:
            sha, size = sha256_file(path)
        except OSError as exc:
            yield name, f"unreadable: {exc.strerror or exc}"
            continue
        yield InputFile(path, name, sha, size)


def hash_inputs(paths: list[str]) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """``iter_hashed`` as two lists: the inputs, and (name, reason) of the files left out."""
    inputs: list[InputFile] = []
    rejected: list[tuple[str, str]] = []
    for item in iter_hashed(paths):
        if isinstance(item, InputFile):
            inputs.append(item)
        else:
            rejected.append(item)
    return inputs, rejected


def cam_settings(cam: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """Validated Grad-CAM job settings, environment defaults filled in (``PlanError``).

    ``metrics`` (comma-separated faithfulness metric names, default none) has no environment
    default: they cost many extra passes per photo, so a run asks for them itself."""
    from convatlas.shared.engine.cams import check_methods
    from convatlas.shared.images import output_format
    from convatlas.shared.metrics_summary import check_metrics

    cam = dict(cam or {})
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


def _heatmap_items(
    paths: list[str], model: str, cls: str | None, layer: str | None, settings: Settings,
    precision: str, cam: dict[str, Any] | None,
) -> Iterator[InputFile | tuple[str, str] | GradcamJob]:
    """Validate the request (``PlanError`` before the first item), then walk ``paths``: each
    input, refused file and new job, one at a time. The same photo twice is one job; the set of
    digests seen is the only per-photo state kept (about 100 bytes a photo)."""
    spec = resolve_model(model)
    try:
        check_precision(precision)
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
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
    items = _heatmap_items(paths, model, cls, layer, settings, precision, cam)
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
    plan.run_id = _run_id("heatmaps", plan.jobs)
    return plan


class SpooledPlan:
    """A plan too big to hold: its jobs, inputs and refused files wait in a local spool file
    (one JSON line each) and are read back shard by shard. Same interface as ``Plan`` for
    ``submit_plan``: ``run_id``, ``kind``, ``model``, ``grids``, ``total``, ``header()``,
    ``shard_count()``, ``shards()``, ``iter_rejected()``."""

    grids: list[GridJob] = []

    def __init__(self, kind: str, model: str) -> None:
        self.kind, self.model, self.run_id = kind, model, ""
        self.total = self.inputs_total = self.rejected_total = self.entries = 0
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="convatlas-plan-")
        self._hash = RunHash(kind)

    def add(self, item: InputFile | tuple[str, str] | Job) -> None:
        if isinstance(item, InputFile):
            line: dict[str, Any] = {"f": [str(item.path), item.name, item.sha256, item.size]}
            self.inputs_total += 1
        elif isinstance(item, tuple):
            line = {"r": list(item)}
            self.rejected_total += 1
        else:
            line = {"j": item.to_dict()}
            self._hash.add(item.marker)
            self.total += 1
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.entries += 1

    def seal(self) -> SpooledPlan:
        self._file.flush()
        self.run_id = self._hash.run_id()
        return self

    def close(self) -> None:
        self._file.close()

    def shard_count(self, size: int = SHARD_SIZE) -> int:
        return max(1, _chunks(self.entries, size))

    def shards(self, size: int = SHARD_SIZE) -> Iterator[Shard]:
        """``shard_count(size)`` shards of ``size`` spool entries each, in walk order."""
        self._file.seek(0)
        shard, taken, offset = Shard(0), 0, 0
        for raw in self._file:
            line = json.loads(raw)
            if "j" in line:
                shard.jobs.append(job_from_dict(line["j"]))
                offset += 1
            elif "f" in line:
                path, name, sha, size_ = line["f"]
                shard.inputs.append(InputFile(Path(path), name, sha, size_))
            else:
                shard.rejected.append((line["r"][0], line["r"][1]))
            taken += 1
            if taken == size:
                yield shard
                shard, taken = Shard(offset), 0
        if taken or offset == 0 and not self.entries:
            yield shard

    def iter_rejected(self) -> Iterator[tuple[str, str]]:
        self._file.seek(0)
        for raw in self._file:
            if raw.startswith('{"r"'):
                name, reason = json.loads(raw)["r"]
                yield name, reason

    def header(self, size: int = SHARD_SIZE) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": self.kind, "model": self.model, "grids": [],
                "jobs_total": self.total, "rejected_total": self.rejected_total,
                "shards": self.shard_count(size), "shard_size": size}


def spool_heatmaps(
    paths: list[str], model: str, cls: str | None, layer: str | None, settings: Settings,
    precision: str = "float32", cam: dict[str, Any] | None = None,
) -> SpooledPlan:
    """``plan_heatmaps`` for a folder of any size: the same jobs and run id, kept in a spool
    file instead of memory (the producer's memory does not grow with the folder)."""
    items = _heatmap_items(paths, model, cls, layer, settings, precision, cam)
    plan = SpooledPlan("heatmaps", model)
    try:
        for item in items:
            plan.add(item)
    except BaseException:
        plan.close()
        raise
    if not plan.inputs_total and not plan.rejected_total:
        plan.close()
        raise PlanError("no images found")
    return plan.seal()


# --- dataset examples ---------------------------------------------------------------------------

from convatlas.shared.jobs.common import read_json  # noqa: E402
from convatlas.shared.jobs.examples_map import ExamplesJob  # noqa: E402
from convatlas.shared.jobs.examples_reduce import ExamplesReduceJob  # noqa: E402
from convatlas.shared.storage import Storage  # noqa: E402


@dataclass
class ExamplesPlan(Plan):
    """A plan of map jobs plus the per-layer reduces (listed in the manifest for the workers)."""

    reduces: list[ExamplesReduceJob] = field(default_factory=list)

    def manifest(self) -> dict:
        return {**super().manifest(), "examples_reduces": [r.to_dict() for r in self.reduces]}

    def header(self, size: int = SHARD_SIZE) -> dict[str, Any]:
        return {**super().header(size), "examples_reduces": [r.to_dict() for r in self.reduces]}


def plan_examples(
    paths: list[str], model: str, layers: str, top: int, settings: Settings,
    storage: Storage | None = None, precision: str = "float32", batch: int = 32,
    side: int | None = None,
) -> ExamplesPlan:
    """Map jobs (batches of ``batch`` photos) for the photos not seen before for these layers
    (per ``storage``'s photo markers), and one reduce per layer; all checked before queueing."""
    spec = resolve_model(model)
    try:
        check_precision(precision)
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
    if not 1 <= top <= 100:
        raise PlanError(f"--top must be 1..100, got {top}")
    if not 1 <= batch <= 1024:
        raise PlanError(f"--batch must be 1..1024, got {batch}")
    side = side or spec.input_size or 224
    if spec.input_size and side != spec.input_size:
        raise PlanError(f"{model} takes {spec.input_size}×{spec.input_size} inputs: --side {spec.input_size}")
    if not 16 <= side <= 1024:
        raise PlanError(f"--side must be 16..1024, got {side}")
    chosen = parse_layers(model, layers)
    order = [name for name, _ in chosen]
    wid = model_weights_id(model, settings)
    inputs, rejected = hash_inputs(paths)
    names: dict[str, str] = {}
    for f in inputs:
        names.setdefault(f.sha256, f.name)
    if not inputs and not rejected:
        raise PlanError("no images found")
    prefix = keys.examples_prefix(model, wid, side, top, precision)
    covered: dict[str, set[str]] = {}
    if storage is not None:
        sets: dict[str, set[str]] = {}
        for key in storage.list_keys(f"{prefix}/photos/"):
            lsid, _, fname = key[len(prefix) + len("/photos/"):].partition("/")
            if lsid not in sets:
                layerset = read_json(storage, f"{prefix}/layersets/{lsid}.json") or {}
                sets[lsid] = set(layerset.get("layers", []))
            covered.setdefault(fname.removesuffix(".json"), set()).update(sets[lsid])
    by_missing: dict[tuple[str, ...], list[str]] = {}
    for sha in sorted(names):
        missing = tuple(n for n in order if n not in covered.get(sha, set()))
        if missing:
            by_missing.setdefault(missing, []).append(sha)
    jobs: list[Job] = []
    for missing, shas in sorted(by_missing.items()):
        for i in range(0, len(shas), batch):
            chunk = tuple(shas[i : i + batch])
            jobs.append(ExamplesJob(model, wid, missing, chunk, tuple(names[s] for s in chunk),
                                    top, side, precision))
    reduces = [ExamplesReduceJob(model, wid, name, channels, top, side, precision)
               for name, channels in chosen]
    plan = ExamplesPlan("examples", model, jobs, [], inputs, rejected, reduces=reduces)
    plan.run_id = "e-" + keys.short_hash(
        {"prefix": prefix, "layers": order, "photos": sorted(names),
         "jobs": [j.marker for j in jobs]}, 12)
    return plan
