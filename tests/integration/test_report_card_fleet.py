"""The CAM report card on the fleet, no mocks: `submit report-card --wait` through a real Redis,
SeaweedFS and a `celery worker` (one job per sampled photo, then the post-run step that ranks
them) gives the card a local `report-card` run computes; `fetch` brings it down and `heatmaps
--method auto --layer auto` reads its recommendation; a re-submit queues nothing."""

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

MODEL = "efficientnet-lite0"
METHODS = "gradcam,eigencam"
LAYER = "head_conv"
# a cheap protocol: few deletion / insertion steps, three ROAD percentiles
CARD_ARGS = ["--model", MODEL, "--sample", "3", "--methods", METHODS, "--layers", LAYER,
             "--steps", "4", "--road-percentiles", "30,60,90", "--randomise-layers", "2"]
# Both sides put one photo in each model call (the worker's max batch 1, the local run's batch
# size 1), each in a fresh process (see test_metrics_fleet for why batching matters).
TOLERANCE = 1e-5
FIGURES = ("score", "deletion_auc", "insertion_auc", "road", "randomised_spearman")
REDIS_DB = 9  # this module's own database: other tests' workers must not take its tasks


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    with started_fleet(redis_server, s3_server, tmp_path_factory.mktemp("card-fleet"),
                       db=REDIS_DB, extra_env={"CONVATLAS_MAX_BATCH": "1"}) as f:
        yield f


def _run_id(stdout: str) -> str:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("run "))
    return line.split()[1].rstrip(":")


def test_the_fleet_card_equals_the_local_card(fleet: Fleet, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sample_photos()[:4]:
        shutil.copy(p, folder / p.name)

    r = fleet.cli("submit", "report-card", str(folder), *CARD_ARGS, "--wait", "--timeout", "400",
                  timeout=520)
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = _run_id(r.stdout)
    assert "3 jobs queued" in r.stdout, r.stdout

    fetched = tmp_path / "fetched"
    f = fleet.cli("fetch", run_id, str(fetched))
    assert f.returncode == 0, f.stdout + f.stderr
    (card_path,) = list((fetched / "results" / "report-cards").rglob("card.json"))
    fleet_card = json.loads(card_path.read_text())
    assert (card_path.parent / "index.html").is_file()

    out = tmp_path / "local"
    local = subprocess.run(
        [sys.executable, "-m", "convatlas.producer.cli", "report-card", str(folder), *CARD_ARGS,
         "--batch-size", "1", "--out", str(out)],
        cwd=REPO, env=fleet.env, capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stdout + local.stderr
    (local_path,) = list((out / "report-cards").rglob("card.json"))
    local_card = json.loads(local_path.read_text())

    assert fleet_card["key"] == local_card["key"]  # the key covers the same request
    assert fleet_card["photos"] == local_card["photos"] and len(fleet_card["photos"]) == 3
    assert fleet_card["recommended"]["method"] == local_card["recommended"]["method"]
    assert fleet_card["recommended"]["layer"] == local_card["recommended"]["layer"]
    order = [(row["method"], row["layer"]) for row in fleet_card["rows"]]
    assert order == [(row["method"], row["layer"]) for row in local_card["rows"]]
    for a, b in zip(fleet_card["rows"], local_card["rows"], strict=True):
        for k in FIGURES:
            assert abs(a[k] - b[k]) <= TOLERANCE, (a["method"], k, a[k], b[k])
        assert a["flagged"] == b["flagged"]
    keep = {k: v for k, v in local_card.items() if k != "rows"}
    assert {k: v for k, v in fleet_card.items() if k != "rows"} == keep

    # the fetched card's recommendation is what `heatmaps --method auto --layer auto` reads
    h = subprocess.run(
        [sys.executable, "-m", "convatlas.producer.cli", "heatmaps", str(sample_photos()[0]),
         "--model", MODEL, "--method", "auto", "--layer", "auto", "--out", str(fetched), "-q"],
        cwd=REPO, env=fleet.env, capture_output=True, text=True, timeout=300)
    assert h.returncode == 0, h.stdout + h.stderr
    rec = fleet_card["recommended"]
    assert list((fetched / "results").rglob(f"gradcam/*/{rec['layer']}/**/record.json"))

    again = fleet.cli("submit", "report-card", str(folder), *CARD_ARGS)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _run_id(again.stdout) == run_id
    assert "0 jobs queued" in again.stdout, again.stdout
