"""Grad-CAM jobs: one photo each (by content hash), decoded alone, run in batches of photos."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from convatlas.shared import keys
from convatlas.shared.images import ImageDecodeError, decode_image, encode_png
from convatlas.shared.jobs.common import (
    JobResult,
    existing_result,
    io_map,
    json_bytes,
    npy_bytes,
    record_failure,
)
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

    def outcome_folders(self) -> tuple[str, str]:
        """(the photo's folder, the folder shared by every photo of this target):
        ``.../<target>/<sha[:2]>/<sha>/``."""
        folder = self.prefix + "/"
        return folder, folder.rstrip("/").rsplit("/", 2)[0] + "/"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GradcamJob:
        return cls(**{k: v for k, v in d.items() if k != "kind"})


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
    storage.put_bytes(out["cam"], npy_bytes(cam.heatmap), "application/octet-stream")
    storage.put_bytes(out["record"], json_bytes(record), "application/json")
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

        write = partial(_write_cam, storage, score_kind=lm.spec.score_kind, seconds=seconds,
                        batch=len(idx))
        triples = [(jobs[i], photos[i], cam) for i, cam in zip(idx, cams, strict=True)]
        for i, res in zip(idx, io_map(write, triples), strict=True):
            results[i] = res
    return [r for r in results if r is not None]


def report_entry(job: GradcamJob, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields naming the job, fields from its record when done) for the run report."""
    return ({"name": job.name, "image_sha256": job.image_sha},
            {"top": info.get("top", []), "class_index": info.get("class_index"),
             "empty_heatmap": info.get("empty_heatmap", False)})
