"""The report-card job kind (``convatlas submit report-card``): one job per sampled photo
computes every method's maps at every candidate layer, the randomised model's maps, the
baselines and their faithfulness figures for that photo (``card.photo_entries``); the run's
post-run step ranks them into the card (``card.assemble_card``) and writes ``card.json``,
``index.html`` and the recommendation under ``store.FLEET_ROOT``, keyed as ``store.card_key``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convatlas.shared import keys
from convatlas.shared.engine.report_card import store
from convatlas.shared.jobs.common import (
    JobResult,
    existing_result,
    json_bytes,
    read_json,
    record_failure,
)
from convatlas.shared.manifest import iter_jobs, load_manifest
from convatlas.shared.storage import ObjectNotFound, Storage

__all__ = ["ReportCardJob", "card_outputs", "card_summary_key", "finish_card", "report_entry",
           "run_report_card_jobs", "wait_for_card"]


@dataclass(frozen=True)
class ReportCardJob:
    """One sampled photo of one card request; ``card_key`` names the card it belongs to."""

    model: str
    weights_id: str
    image_sha: str
    card_key: str
    methods: tuple[str, ...]
    layers: tuple[str, ...]
    protocol: dict[str, Any] = field(hash=False)  # ``Protocol.describe()``
    randomisation: dict[str, Any] = field(hash=False)  # ``Randomisation.describe()``
    baselines: tuple[str, ...] = ()
    precision: str = "float32"
    name: str = ""  # display name of the photo (never used in keys)

    kind = "report-card"

    @property
    def folder(self) -> str:
        return store.card_folder_key(self.model, self.card_key, store.FLEET_ROOT)

    @property
    def marker(self) -> str:
        return f"{self.folder}/photos/{self.image_sha}.json"

    @property
    def error_key(self) -> str:
        return f"{self.folder}/photos/{self.image_sha}.error.json"

    def outputs(self) -> dict[str, str]:
        return {"record": self.marker}

    def outcome_folders(self) -> tuple[str, str]:
        return f"{self.folder}/photos/", f"{self.folder}/photos/"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "weights_id": self.weights_id,
                "image_sha": self.image_sha, "card_key": self.card_key,
                "methods": list(self.methods), "layers": list(self.layers),
                "protocol": self.protocol, "randomisation": self.randomisation,
                "baselines": list(self.baselines), "precision": self.precision, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportCardJob:
        return cls(str(d["model"]), str(d["weights_id"]), str(d["image_sha"]), str(d["card_key"]),
                   tuple(d["methods"]), tuple(d["layers"]), dict(d["protocol"]),
                   dict(d["randomisation"]), tuple(d["baselines"]), str(d["precision"]),
                   str(d.get("name", "")))

    def settings(self) -> tuple[Any, Any, list[Any]]:
        """(protocol, randomisation, baselines) as the engine takes them."""
        from convatlas.shared.engine.faithfulness import Protocol
        from convatlas.shared.engine.report_card.baselines import BASELINES
        from convatlas.shared.engine.report_card.randomisation import Randomisation

        p = {**self.protocol, "road_percentiles": tuple(self.protocol["road_percentiles"])}
        return Protocol(**p), Randomisation(**self.randomisation), [BASELINES[b] for b in self.baselines]


def run_report_card_jobs(jobs: list[ReportCardJob], storage: Storage,
                         batch_size: int = 16) -> list[JobResult]:
    """Each photo's part of its card, ``batch_size`` photos of one request per model call; a
    missing or undecodable photo fails alone."""
    from convatlas.shared.engine.report_card.card import photo_entries
    from convatlas.shared.engine.report_card.randomisation import randomised_layers
    from convatlas.shared.images.checks import ImageDecodeError
    from convatlas.shared.images.decode import decode_image
    from convatlas.shared.models.registry import get_model

    out: dict[int, JobResult] = {}
    todo: dict[tuple[str, str], list[tuple[int, Any]]] = {}
    for i, job in enumerate(jobs):
        if (done := existing_result(job, storage)) is not None:
            out[i] = done
            continue
        try:
            image = decode_image(storage.get_bytes(keys.input_key(job.image_sha)))
        except ObjectNotFound:
            out[i] = record_failure(job, storage, "input image not found in storage")
            continue
        except ImageDecodeError as exc:
            out[i] = record_failure(job, storage, f"bad image: {exc.reason}")
            continue
        todo.setdefault((job.model, job.card_key), []).append((i, image))
    for group in todo.values():
        for start in range(0, len(group), max(1, batch_size)):
            chunk = group[start:start + max(1, batch_size)]
            first = jobs[chunk[0][0]]
            lm = get_model(first.model)
            protocol, randomisation, baselines = first.settings()
            photos = [(jobs[i].name, jobs[i].image_sha, im) for i, im in chunk]
            per_photo = photo_entries(lm, photos, first.methods, first.layers, protocol,
                                      randomisation, baselines, first.precision, batch_size)
            rand = randomised_layers(lm.model, randomisation.layers)
            for (i, _), record in zip(chunk, per_photo, strict=True):
                record = {**record, "randomised_layers": rand}
                storage.put_bytes(jobs[i].marker, json_bytes(record), "application/json")
                out[i] = JobResult("done", jobs[i].outputs(), None, record)
    return [out[i] for i in range(len(jobs))]


def report_entry(job: ReportCardJob, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"name": job.name, "image_sha256": job.image_sha, "card_key": job.card_key},
            {"class_index": info.get("class")})


def card_summary_key(run_id: str) -> str:
    return f"{keys.run_prefix(run_id)}/report-card.json"


def card_outputs(storage: Storage, run_id: str) -> list[str]:
    """The keys the post-run step wrote (what ``convatlas fetch`` copies): its summary and,
    when the card was made, ``card.json``, ``index.html`` and the recommendation."""
    summary = read_json(storage, card_summary_key(run_id))
    if summary is None:
        return []
    made = [summary[k] for k in ("card", "index", "recommendation") if k in summary]
    return [card_summary_key(run_id), *made]


def finish_card(storage: Storage, run_id: str) -> dict[str, Any]:
    """The post-run step: rank the photos' parts into the card and write ``card.json``,
    ``index.html`` and the recommendation (only when every photo has its part)."""
    from convatlas.shared.engine.report_card.card import assemble_card
    from convatlas.shared.engine.report_card.html import card_html

    jobs = [ReportCardJob.from_dict(d) for d in iter_jobs(storage, load_manifest(storage, run_id))]
    records = [read_json(storage, j.marker) for j in jobs]
    summary: dict[str, Any] = {"run_id": run_id, "photos": len(jobs),
                               "computed": sum(r is not None for r in records)}
    parts = [r for r in records if r is not None]
    if not jobs or len(parts) < len(jobs):
        summary["status"] = "incomplete: a photo failed, no card written"
    else:
        first = jobs[0]
        protocol, randomisation, baselines = first.settings()
        card = assemble_card(first.model, first.weights_id, parts, first.methods, first.layers,
                             protocol, randomisation, parts[0]["randomised_layers"],
                             [b.name for b in baselines])
        card = {**card, "key": first.card_key}
        folder = first.folder
        storage.put_bytes(f"{folder}/card.json", json_bytes(card), "application/json")
        storage.put_bytes(f"{folder}/index.html", card_html(card).encode(), "text/html")
        rec_key = store.recommendation_key(first.model, first.weights_id, store.FLEET_ROOT)
        storage.put_bytes(rec_key, json_bytes(store.recommendation(
            first.model, card, f"{folder}/card.json")), "application/json")
        summary.update(status="done", key=first.card_key, card=f"{folder}/card.json",
                       index=f"{folder}/index.html", recommendation=rec_key,
                       recommended=card["recommended"])
    storage.put_bytes(card_summary_key(run_id), json_bytes(summary), "application/json")
    return summary


def wait_for_card(storage: Storage, run_id: str, timeout: float) -> dict[str, Any]:
    """The post-run step's summary once written (``TimeoutError`` after ``timeout`` s): a
    run's jobs have outcomes before its card is ranked and written."""
    import time

    deadline = time.monotonic() + timeout
    while (summary := read_json(storage, card_summary_key(run_id))) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id}: no report card after {timeout:.0f} s")
        time.sleep(0.5)
    return summary
