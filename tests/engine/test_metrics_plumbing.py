"""Faithfulness metrics through the heatmaps pipeline: ``--metrics`` on both commands, refused
before anything is queued; part of the Grad-CAM job's key only when asked (old keys unchanged);
per method in each photo's record, mean ± sd in report.json, the summary and the gallery."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from convatlas.producer import fleet_cli
from convatlas.producer.cli import app
from convatlas.producer.plans.heatmaps import cam_settings
from convatlas.producer.plans.plan import PlanError
from convatlas.shared import metrics_summary
from convatlas.shared.config import Settings
from convatlas.shared.jobs import GradcamJob, job_from_dict
from convatlas.shared.samples import sample_photos

W, SHA = "0123456789ab", "ab" * 32
NAMES = "deletion, insertion, road, avgdrop"
runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "240", **(env or {})})


# --- the option --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["heatmaps"], ["submit", "heatmaps"]])
def test_help_documents_the_names(command: list[str]) -> None:
    r = invoke(*command, "--help")
    assert r.exit_code == 0, r.output
    assert "--metrics" in r.output
    for name in metrics_summary.METRICS:
        assert name in r.output.split("--metrics", 1)[1]


def test_unknown_metrics_are_refused_before_any_work_locally(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("heatmaps", str(sample_photos()[0]), "--metrics", "deletion,auc", "--out", str(out), "-q")
    assert r.exit_code == 2, r.output
    assert "'auc'" in r.output and NAMES in r.output
    assert not out.exists()


def test_unknown_metrics_are_refused_before_anything_is_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[list[GradcamJob]] = []

    def submit(plan: Any, *args: Any, **kwargs: Any) -> None:  # the jobs that would be queued
        if hasattr(plan, "shards"):  # a spooled plan (large folders): read back shard by shard
            queued.append([j for shard in plan.shards() for j in shard.jobs])
        else:
            queued.append(list(plan.jobs))

    monkeypatch.setattr(fleet_cli, "_submit", submit)
    env = {"CONVATLAS_BROKER_URL": "redis://127.0.0.1:1/0"}
    r = invoke("submit", "heatmaps", str(sample_photos()[0]), "--metrics", "road,drop", env=env)
    assert r.exit_code == 2 and "'drop'" in r.output and NAMES in r.output, r.output
    assert queued == []
    # the same command with valid names is queued, the metrics in every job (canonical order)
    r = invoke("submit", "heatmaps", *map(str, sample_photos()[:2]), "--metrics",
               "insertion, deletion,insertion", env=env)
    assert r.exit_code == 0, r.output
    (jobs,) = queued
    assert len(jobs) == 2 and {j.metrics for j in jobs} == {("deletion", "insertion")}
    assert all(j.to_dict()["metrics"] == ["deletion", "insertion"] for j in jobs)


def test_cam_settings_validate_metrics() -> None:
    assert cam_settings({}, Settings())["metrics"] == ()
    assert cam_settings({"metrics": "road,avgdrop"}, Settings())["metrics"] == ("road", "avgdrop")
    with pytest.raises(PlanError, match=NAMES):
        cam_settings({"metrics": "deletion,ROAD"}, Settings())


# --- keys --------------------------------------------------------------------------------------

# today's job dicts and their markers, as written before metrics existed (commit 20a80c9)
OLD = [
    ({"kind": "gradcam", "model": "efficientnet-lite0", "weights_id": W, "image_sha": SHA,
      "class_index": None, "layer": None, "name": "", "precision": "float32",
      "methods": ["gradcam"], "overlay_format": "jpeg", "overlay_max_side": 0},
     f"results/efficientnet-lite0/{W}/gradcam/v1/auto/top1/ab/{SHA}/gradcam-jpeg/record.json"),
    ({"kind": "gradcam", "model": "efficientnet-lite0", "weights_id": W, "image_sha": SHA,
      "class_index": 281, "layer": "top_activation", "name": "cat.jpg", "precision": "bfloat16",
      "methods": ["gradcam", "gradcam++"], "overlay_format": "webp", "overlay_max_side": 800},
     f"results/efficientnet-lite0/{W}/gradcam/v1-bf16/top_activation/c281/ab/{SHA}/"
     "gradcam_gradcampp-webp-max800/record.json"),
]


@pytest.mark.parametrize(("old", "marker"), OLD)
def test_an_old_job_keeps_its_marker_and_its_dict(old: dict[str, Any], marker: str) -> None:
    job = job_from_dict(json.loads(json.dumps(old)))
    assert job.metrics == ()
    assert job.marker == marker
    assert job.to_dict() == old  # no new key: workers that predate metrics still read it


def test_methods_and_metrics_are_kept_apart_in_keys() -> None:
    def job(methods: tuple[str, ...] = ("gradcam",), metrics: tuple[str, ...] = ()) -> GradcamJob:
        return GradcamJob("efficientnet-lite0", W, SHA, methods=methods, metrics=metrics)

    jobs = [job(), job(metrics=("deletion",)), job(metrics=("deletion", "insertion")),
            job(metrics=("road",)), job(metrics=("avgdrop",)), job(("gradcam", "hirescam")),
            job(("gradcam", "hirescam"), ("deletion",)), job(("hirescam",), ("deletion",))]
    assert len({j.marker for j in jobs}) == len(jobs)
    assert len({j.error_key for j in jobs}) == len(jobs)
    for j in jobs:
        assert job_from_dict(json.loads(json.dumps(j.to_dict()))) == j
    # the same set in another order is the same figures, so the same key
    assert job(metrics=("insertion", "deletion")).marker == jobs[2].marker
    with pytest.raises(ValueError, match=NAMES):
        job(metrics=("deletion", "rise"))


def test_the_metrics_protocol_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from convatlas.shared.engine import faithfulness

    job = GradcamJob("efficientnet-lite0", W, SHA, metrics=("deletion",))
    before, plain = job.marker, GradcamJob("efficientnet-lite0", W, SHA).marker
    assert f".p{faithfulness.PROTOCOL.digest()}/" in before
    monkeypatch.setattr(faithfulness, "PROTOCOL", faithfulness.Protocol(steps=10))
    assert job.marker != before  # figures of another protocol are never reused
    assert GradcamJob("efficientnet-lite0", W, SHA).marker == plain  # no metrics: unchanged


# --- the aggregate, without a model --------------------------------------------------------------


def _item(method_metrics: dict[str, dict[str, Any]], status: str = "done") -> dict[str, Any]:
    return {"kind": "gradcam", "status": status,
            "method_stats": {m: {"peak": 1.0, "metrics": f} for m, f in method_metrics.items()}}


def test_run_metrics_mean_and_sd_per_method() -> None:
    a = {"probability": 0.9, "deletion_auc": 0.2, "deletion_curve": [0.9, 0.3, 0.1],
         "road": 0.05, "avg_drop": 0.5, "conf_increase": False}
    b = {"probability": 0.5, "deletion_auc": 0.1, "deletion_curve": [0.5, 0.1, 0.0],
         "road": 0.01, "avg_drop": 0.0, "conf_increase": True}
    c = {"probability": 0.5, "deletion_auc": 0.4, "deletion_curve": [0.5, 0.4, 0.3]}
    first = _item({"eigencam": c, "gradcam": a})  # records list methods sorted by name
    first["methods"] = ["gradcam", "eigencam"]  # as the run asked for them
    items = [first, _item({"gradcam": b}),
             _item({"gradcam": c}, status="failed"), {"kind": "gradcam", "status": "done"}]
    got = metrics_summary.run_metrics(items)
    assert list(got) == ["gradcam", "eigencam"]
    g = got["gradcam"]
    assert g["photos"] == 2
    for key in ("deletion_auc", "road", "avg_drop", "probability"):
        assert g["summary"][key]["mean"] == pytest.approx(statistics.mean([a[key], b[key]]))
        assert g["summary"][key]["sd"] == pytest.approx(statistics.stdev([a[key], b[key]]))
    assert g["summary"]["conf_increase"]["mean"] == 0.5
    assert "insertion_auc" not in g["summary"]
    assert g["mean_curves"] == {"deletion": pytest.approx([0.7, 0.2, 0.05])}
    assert got["eigencam"]["summary"]["deletion_auc"] == {"mean": 0.4, "sd": 0.0, "n": 1.0}
    assert metrics_summary.report_entry([_item({})]) == {}  # no metrics: the report of before


# --- a tiny local run on the offline model -----------------------------------------------------


def _trapezoid(curve: list[float]) -> float:
    return sum((curve[i] + curve[i + 1]) / 2 for i in range(len(curve) - 1)) / (len(curve) - 1)


def test_local_run_records_reports_and_shows_the_metrics(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in sample_photos()[:2]:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)  # a corrupt photo
    out = tmp_path / "out"
    methods = ("gradcam", "eigencam")
    r = invoke("heatmaps", str(src), "--method", ",".join(methods),
               "--metrics", "deletion,insertion,road,avgdrop", "--out", str(out), "-q")
    assert r.exit_code == 1, r.output  # the corrupt photo failed, alone
    (report_path,) = out.glob("runs/*/report.json")
    report = json.loads(report_path.read_text())
    assert report["counts"]["done"] == 2 and report["counts"]["failed"] == 1
    (failed,) = [j for j in report["jobs"] if j["status"] == "failed"]
    assert failed["name"] == "broken.jpg"

    records = [json.loads(p.read_text()) for p in out.glob("results/**/record.json")]
    assert len(records) == 2
    per_method: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for rec in records:
        assert rec["metrics"]["names"] == ["deletion", "insertion", "road", "avgdrop"]
        assert rec["metrics"]["protocol"]["steps"] == 20
        for m in methods:
            f = rec["methods"][m]["metrics"]
            per_method[m].append(f)
            p = f["probability"]
            # the metrics' unperturbed pass is the CAM pass's input: the same top-1 probability
            assert p == pytest.approx(rec["top"][0]["probability"], abs=1e-4)
            assert len(f["deletion_curve"]) == len(f["insertion_curve"]) == 21
            assert f["deletion_curve"][0] == pytest.approx(p) == f["insertion_curve"][-1]
            assert f["deletion_auc"] == pytest.approx(_trapezoid(f["deletion_curve"]), abs=1e-6)
            assert f["insertion_auc"] == pytest.approx(_trapezoid(f["insertion_curve"]), abs=1e-6)
            assert len(f["road_morf"]) == len(f["road_lerf"]) == 9
            assert f["road"] == pytest.approx(
                statistics.mean((lo - mo) / 2 for lo, mo in zip(f["road_lerf"], f["road_morf"], strict=True)),
                abs=1e-6)
            pm = f["masked_probability"]
            assert f["avg_drop"] == pytest.approx(max(0.0, p - pm) / p, rel=1e-4)
            assert f["conf_increase"] == (pm > p)
        # two methods, two heatmaps: their figures differ
        assert rec["methods"]["gradcam"]["metrics"]["deletion_curve"] != \
            rec["methods"]["eigencam"]["metrics"]["deletion_curve"]

    assert set(report["metrics"]) == set(methods)
    for m in methods:
        stats = report["metrics"][m]["summary"]
        assert report["metrics"][m]["photos"] == 2
        for key in ("deletion_auc", "insertion_auc", "road", "avg_drop"):
            values = [f[key] for f in per_method[m]]
            assert stats[key]["mean"] == pytest.approx(statistics.mean(values))
            assert stats[key]["sd"] == pytest.approx(statistics.stdev(values))
            assert math.isfinite(stats[key]["sd"])
        line = next(x for x in r.output.splitlines() if x.strip().startswith(f"metrics {m} "))
        d = stats["deletion_auc"]
        assert f"deletion AUC {d['mean']:.3f} ± {d['sd']:.3f}" in line
        assert "insertion AUC" in line and "ROAD" in line and "Average Drop" in line

    gallery = next(out.glob("runs/*/index.html")).read_text()
    assert "Faithfulness" in gallery
    # per photo and method one pair of curves, plus the run's mean curves per method
    assert gallery.count("<polyline class='deletion'") == 2 * len(methods) + len(methods)
    assert gallery.count("<polyline class='insertion'") == 2 * len(methods) + len(methods)

    # the same photos without metrics: other keys, no figures in records or report
    plain = invoke("heatmaps", *(str(src / p.name) for p in sample_photos()[:2]),
                   "--method", ",".join(methods), "--out", str(out), "-q")
    assert plain.exit_code == 0, plain.output
    new = [json.loads(p.read_text()) for p in out.glob("results/**/record.json")]
    assert len(new) == 4
    assert sum("metrics" in rec for rec in new) == 2
    assert all("metrics" not in rec["methods"][m] for rec in new if "metrics" not in rec for m in methods)
    (plain_report,) = [json.loads(p.read_text()) for p in out.glob("runs/*/report.json")
                       if p != report_path]
    assert "metrics" not in plain_report and "metrics " not in plain.output
