"""Grad-CAM jobs: one photo each (by content hash), decoded alone, run in batches of photos."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from convatlas.shared import keys
from convatlas.shared.backend_select import active_backend
from convatlas.shared.images.checks import ImageDecodeError
from convatlas.shared.images.decode import DecodedPhoto, decode_photo
from convatlas.shared.jobs.common import (
    JobResult,
    existing_result,
    json_bytes,
    npy_bytes,
    record_failure,
)
from convatlas.shared.jobs.stages import Stages, run_staged
from convatlas.shared.render import HEATMAP_SIDE
from convatlas.shared.storage import ObjectNotFound, Storage


@dataclass(frozen=True)
class GradcamJob:
    model: str
    weights_id: str
    image_sha: str
    class_index: int | None = None  # None = top-1
    layer: str | None = None  # None = last conv feature map
    name: str = ""  # display name of the photo (never used in keys)
    precision: str = "float32"  # of the network pass (convatlas.shared.engine.precision)
    methods: tuple[str, ...] = ("gradcam",)  # CAM methods, all computed in this one job
    overlay_format: str = "jpeg"  # jpeg | png | webp
    overlay_max_side: int = 0  # 0 = the photo's original size
    metrics: tuple[str, ...] = ()  # faithfulness metrics per method (none: the key of before)

    kind = "gradcam"

    def __post_init__(self) -> None:
        from convatlas.shared.engine.cams import check_methods
        from convatlas.shared.images.encode import output_format
        from convatlas.shared.metrics_summary import canonical_metrics

        object.__setattr__(self, "methods", check_methods(self.methods))
        object.__setattr__(self, "overlay_format", output_format(self.overlay_format))
        object.__setattr__(self, "metrics", canonical_metrics(self.metrics))
        if self.overlay_max_side < 0:
            raise ValueError(f"overlay max side must be 0 (original size) or more, "
                             f"got {self.overlay_max_side}")

    @property
    def variant(self) -> str:
        """The key segment of what is computed and how it is drawn: methods, overlay format,
        overlay size, faithfulness metrics and their protocol (``-metrics.deletion.road.p<digest>``;
        nothing without them, so a job without metrics keeps the key it always had). Runs with
        other settings never share results."""
        from convatlas.shared.engine.cams import method_slug

        size = f"-max{self.overlay_max_side}" if self.overlay_max_side else ""
        metrics = "".join(f".{m}" for m in self.metrics)
        if metrics:
            from convatlas.shared.engine.faithfulness import PROTOCOL

            metrics += f".p{PROTOCOL.digest()}"
        return ("_".join(method_slug(m) for m in self.methods) + f"-{self.overlay_format}{size}"
                + (f"-metrics{metrics}" if metrics else ""))

    @property
    def prefix(self) -> str:
        base = keys.gradcam_prefix(
            self.model, self.weights_id, self.image_sha, self.class_index, self.layer,
            self.precision,
        )
        return f"{base}/{keys.safe_name(self.variant, 'variant')}"

    @property
    def marker(self) -> str:
        return f"{self.prefix}/record.json"

    @property
    def error_key(self) -> str:
        return f"{self.prefix}/error.json"

    def method_outputs(self, method: str) -> dict[str, str]:
        """The files of one method: the first method's are ``heatmap.png``, ``overlay.<ext>``,
        ``cam.npy``; the others' carry the method's slug (``overlay-hirescam.jpg``)."""
        from convatlas.shared.engine.cams import method_slug
        from convatlas.shared.images.encode import output_extension

        tag = "" if method == self.methods[0] else f"-{method_slug(method)}"
        p, ext = self.prefix, output_extension(self.overlay_format)
        return {"heatmap": f"{p}/heatmap{tag}.png", "overlay": f"{p}/overlay{tag}{ext}",
                "cam": f"{p}/cam{tag}.npy"}

    def outputs(self) -> dict[str, str]:
        out = dict(self.method_outputs(self.methods[0]))
        for m in self.methods[1:]:
            out.update({f"{k}:{m}": v for k, v in self.method_outputs(m).items()})
        out["record"] = self.marker
        return out

    def outcome_folders(self) -> tuple[str, str]:
        """(the photo's folder, the folder shared by every photo of this target):
        ``.../<target>/<sha[:2]>/<sha>/<variant>/``."""
        folder = self.prefix + "/"
        return folder, folder.rstrip("/").rsplit("/", 3)[0] + "/"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = list(self.methods)
        if self.metrics:
            d["metrics"] = list(self.metrics)
        else:  # the dict of before: workers that predate metrics still read it
            del d["metrics"]
        return {"kind": self.kind, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GradcamJob:
        fields = {k: v for k, v in d.items() if k != "kind"}
        for name in ("methods", "metrics"):
            if name in fields:
                fields[name] = tuple(fields[name])
        return cls(**fields)


# Full-size decodes for overlays at once per process: each holds ≈ 3 bytes a pixel (36 MB for a
# 12-MP photo) plus the blend's ≈ 7, so in-flight memory is bounded by pixels, not photo count.
OVERLAY_DECODES = threading.BoundedSemaphore(2)


def _write_cam(
    storage: Storage, triple: tuple[GradcamJob, Loaded, Computed], *,
    score_kind: str, info: dict[str, Any],
) -> JobResult:
    """Per method: heatmap, overlay and raw map; ``record.json`` (the marker) last. The photo
    is decoded again here at the overlay's size (the model had only its small square)."""
    from convatlas.shared.images.decode import overlay_size
    from convatlas.shared.render import heatmap_png, render_overlay

    job, loaded, computed = triple
    by_method = computed.cams
    photo = loaded.photo
    first = by_method[job.methods[0]]
    record: dict[str, Any] = {
        "model": job.model,
        "weights_id": job.weights_id,
        "image_sha256": job.image_sha,
        "image_name": job.name,
        "image_size": [photo.width, photo.height],
        "layer": first.layer,
        "class_index": first.class_index,
        "class_requested": job.class_index,
        "score": first.score,
        "score_kind": score_kind,
        "empty_heatmap": first.empty,
        "precision": job.precision,
        "backend": active_backend(),  # not in the key (backend_select.active_backend)
        "heatmap_peak": first.peak,
        "heatmap_shape": list(first.heatmap.shape),
        "top": [asdict(p) for p in first.top],
        "methods": {},
        "overlay": {"format": job.overlay_format, "max_side": job.overlay_max_side,
                    "size": list(overlay_size(photo.width, photo.height, job.overlay_max_side))},
        "heatmap_size": [HEATMAP_SIDE, HEATMAP_SIDE],
        "decode_scale": photo.scale,
        **info,  # seconds (model, per job), batch, input_wait_seconds
    }
    if job.metrics:  # the figures per method are in record["methods"][m]["metrics"]
        from convatlas.shared.engine.faithfulness import PROTOCOL

        record["metrics"] = {"names": list(job.metrics), "protocol": PROTOCOL.describe()}
    encoded = []
    with OVERLAY_DECODES:
        base = decode_photo(loaded.data, overlay_max_side=job.overlay_max_side).overlay_base
        assert base is not None
        for method in job.methods:
            ov = render_overlay(base, by_method[method].heatmap, fmt=job.overlay_format)
            encoded.append((method, ov))
        del base
    for method, ov in encoded:
        cam = by_method[method]
        files = job.method_outputs(method)
        storage.put_bytes(files["heatmap"], heatmap_png(cam.heatmap), "image/png")
        storage.put_bytes(files["overlay"], ov.data, ov.content_type)
        storage.put_bytes(files["cam"], npy_bytes(cam.heatmap), "application/octet-stream")
        record["methods"][method] = {"peak": cam.peak, "empty": cam.empty,
                                     "details": cam.details, "outputs": files}
        if job.metrics:
            record["methods"][method]["metrics"] = computed.metrics[method]
    storage.put_bytes(job.marker, json_bytes(record), "application/json")
    return JobResult("done", job.outputs(), None, record)


@dataclass(frozen=True, eq=False)
class Loaded:
    """A photo ready for the model: its compressed bytes (for the overlay, decoded again after
    the model call) and its reduced decode (the model's square input, the original size)."""

    data: bytes
    photo: DecodedPhoto


def load_photo(job: GradcamJob, storage: Storage, model_side: int) -> JobResult | Loaded:
    """The recorded outcome, or the photo decoded for the model only (JPEG DCT scaling: a
    12-MP photo decodes at 1/8); a bad photo fails here, alone."""
    done = existing_result(job, storage)
    if done is not None:
        return done
    try:
        data = storage.get_bytes(keys.input_key(job.image_sha))
    except ObjectNotFound:
        return record_failure(job, storage, "input image not found in storage")
    try:
        return Loaded(data, decode_photo(data, model_side=model_side))
    except ImageDecodeError as exc:
        return record_failure(job, storage, f"bad image: {exc.reason}")


def prepare(job: GradcamJob, storage: Storage) -> JobResult | Loaded:
    from convatlas.shared.engine.cam_runner import input_size
    from convatlas.shared.models.registry import get_model

    return load_photo(job, storage, input_size(get_model(job.model)))


@dataclass(frozen=True, eq=False)
class Computed:
    """A photo's model outputs: method → ``Cam``, and method → faithfulness figures (empty
    when the job asked for no metrics)."""

    cams: dict[str, Any]
    metrics: dict[str, dict[str, Any]]


def compute(jobs: list[GradcamJob], loaded: list[Loaded], batch_size: int) -> list[Computed]:
    """The model only: every requested method per photo, batched per (model, layer,
    precision, methods, metrics); then, when asked, the faithfulness metrics of every
    (photo, method) of the group in one batched call (``engine.faithfulness``: their perturbed
    passes ``batch_size`` at a time, photos and methods mixed). Outputs in the order of ``jobs``."""
    from convatlas.shared.engine.cam_runner import cams
    from convatlas.shared.engine.faithfulness import faithfulness
    from convatlas.shared.models.registry import get_model

    out: list[Computed | None] = [None] * len(jobs)
    Group = tuple[str, str | None, str, tuple[str, ...], tuple[str, ...]]
    groups: dict[Group, list[int]] = defaultdict(list)
    for i, j in enumerate(jobs):
        groups[(j.model, j.layer, j.precision, j.methods, j.metrics)].append(i)
    for (model, layer, precision, methods, metrics), idx in groups.items():
        lm = get_model(model)
        photos: list[Any] = [loaded[i].photo.model_input for i in idx]  # filled by prepare
        maps = cams(lm, photos, [jobs[i].class_index for i in idx], layer, methods, batch_size,
                    precision=precision)
        figures: list[dict[str, dict[str, Any]]] = [{} for _ in idx]
        if metrics:
            pairs = [(k, m) for k in range(len(idx)) for m in methods]
            results = faithfulness(
                lm, [photos[k] for k, _ in pairs], [maps[k][m].heatmap for k, m in pairs],
                [maps[k][m].class_index for k, m in pairs], metrics, precision,
                batch_size=batch_size, pass_batch=batch_size,
            )
            for (k, m), res in zip(pairs, results, strict=True):
                figures[k][m] = res
        for k, i in enumerate(idx):
            out[i] = Computed(maps[k], figures[k])
    return [c for c in out if c is not None]


def write(job: GradcamJob, loaded: Loaded, computed: Computed, storage: Storage,
          info: dict[str, Any]) -> JobResult:
    from convatlas.shared.models.registry import get_model

    return _write_cam(storage, (job, loaded, computed), score_kind=get_model(job.model).spec.score_kind,
                      info=info)


STAGES = Stages(prepare, compute, write)


def run_gradcam_jobs(jobs: list[GradcamJob], storage: Storage, batch_size: int = 16) -> list[JobResult]:
    """Run Grad-CAM jobs: decode each photo (failing it alone if bad), then batch the rest;
    every requested method of a photo comes from the same passes."""
    return run_staged(STAGES, jobs, storage, batch_size)


def report_entry(job: GradcamJob, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields naming the job, fields from its record when done) for the run report."""
    return ({"name": job.name, "image_sha256": job.image_sha, "methods": list(job.methods)},
            {"top": info.get("top", []), "class_index": info.get("class_index"),
             "empty_heatmap": info.get("empty_heatmap", False),
             "method_stats": {m: {k: v for k, v in d.items() if k != "outputs"}
                              for m, d in (info.get("methods") or {}).items()}})
