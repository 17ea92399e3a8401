"""CAM methods with faithfulness metrics on the fleet, no mocks: the user's `submit heatmaps
--method … --metrics … --wait` through a real Redis, SeaweedFS and a `celery worker`; the
figures must equal a local run of the same job function, and a corrupt photo fails alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from convatlas.shared.samples import sample_photos
from convatlas.stack.harness import REPO, Fleet
from convatlas.stack.servers import RedisServer, SeaweedS3Server
from tests.pipeline_fixtures import started_fleet

METHODS = "gradcam,eigencam"
METRICS = "deletion,avgdrop"
FIGURES = ("deletion_auc", "avg_drop", "probability", "masked_probability")
# Both sides put one photo in each model call (the worker's max batch 1, the local run's batch
# size 1), each in a fresh process, so both compute the same thing. With different batchings
# the heatmaps differ by float rounding (~1e-6), and where pixels nearly tie the deletion order
# swaps them: that moved a curve point by 4e-4 on an AMD EPYC and by 2.9e-3 on an Intel Xeon,
# which says nothing about the fleet. The tolerance only absorbs float noise.
TOLERANCE = 1e-5
REDIS_DB = 14  # this module's own database: other tests' workers must not take its tasks


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    with started_fleet(redis_server, s3_server, tmp_path_factory.mktemp("fleet"), db=REDIS_DB,
                       extra_env={"CONVATLAS_MAX_BATCH": "1"}) as f:
        yield f


def _by_photo(records: list[dict]) -> dict[str, dict]:
    return {r["image_sha256"]: r for r in records}


def test_metrics_on_the_fleet_equal_a_local_run(fleet: Fleet, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sample_photos()[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 10)

    r = fleet.cli("submit", "heatmaps", str(folder), "--model", "efficientnet-lite0",
                  "--method", METHODS, "--metrics", METRICS, "--wait", "--timeout", "300",
                  timeout=420)
    assert r.returncode == 1, r.stdout + r.stderr  # the corrupt photo failed, alone
    assert "broken.jpg" in r.stdout
    st = fleet.storage
    (report_key,) = [k for k in st.list_keys("runs/") if k.endswith("/report.json")]
    report = json.loads(st.get_bytes(report_key))
    assert report["complete"]
    assert report["counts"]["done"] == 3 and report["counts"]["failed"] == 1
    assert set(report["metrics"]) == {"gradcam", "eigencam"}
    for m in ("gradcam", "eigencam"):
        assert report["metrics"][m]["photos"] == 3
        assert set(report["metrics"][m]["summary"]) >= {"deletion_auc", "avg_drop"}
    fleet_records = [json.loads(st.get_bytes(k)) for k in st.list_keys("results/")
                     if "/gradcam/" in k and k.endswith("record.json")]
    assert len(fleet_records) == 3
    gallery = st.get_bytes(report_key.replace("report.json", "index.html")).decode()
    assert gallery.count("<polyline class='deletion'") == 3 * 2 + 2

    # the local run in a process of its own, as the worker is: a process that has traced the
    # model at other batch sizes before (this test process, after other tests) computes with
    # relaxed shapes and moved a deletion AUC by 1.4e-4
    out = tmp_path / "local"
    local = subprocess.run(
        [sys.executable, "-m", "convatlas.producer.cli", "heatmaps", str(folder),
         "--model", "efficientnet-lite0", "--method", METHODS, "--metrics", METRICS,
         "--batch-size", "1", "--out", str(out), "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=420, check=False)
    assert local.returncode == 1, local.stdout + local.stderr
    local_records = [json.loads(p.read_text()) for p in out.glob("results/**/record.json")]
    # the same job keys on both sides (the metrics and their protocol are in the key)
    assert sorted(str(p.relative_to(out)) for p in out.glob("results/**/record.json")) == sorted(
        k for k in st.list_keys("results/") if "/gradcam/" in k and k.endswith("record.json"))
    here, there = _by_photo(local_records), _by_photo(fleet_records)
    assert set(here) == set(there)
    for sha, rec in there.items():
        assert rec["metrics"] == here[sha]["metrics"]  # names and protocol
        for m in ("gradcam", "eigencam"):
            got, want = rec["methods"][m]["metrics"], here[sha]["methods"][m]["metrics"]
            for key in FIGURES:
                assert got[key] == pytest.approx(want[key], abs=TOLERANCE), (sha, m, key)
            assert got["deletion_curve"] == pytest.approx(want["deletion_curve"], abs=TOLERANCE)
