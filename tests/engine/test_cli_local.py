"""The local CLI as a user runs it: fast --help, refusals before any work, idempotent runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convatlas.shared.images.decode import decode_image
from convatlas.shared.samples import sample_photos

CLI = [sys.executable, "-m", "convatlas.producer.cli"]


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=e, timeout=600)


def test_help_is_fast_and_does_not_import_tensorflow() -> None:
    code = ("import sys, time; t=time.perf_counter(); sys.argv=['convatlas','--help'];\n"
            "import convatlas.producer.cli as c\ntry: c.main()\nexcept SystemExit: pass\n"
            "print('TF' if 'tensorflow' in sys.modules else 'noTF', time.perf_counter()-t, file=sys.stderr)")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t
    assert "grids" in p.stdout and "heatmaps" in p.stdout
    assert "noTF" in p.stderr, p.stderr
    assert wall < 5  # generous bound for a loaded CI box; typically ~0.3 s


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grids", "--layers", "block9_conv1"], "valid layers are block1_conv1"),
        (["grids", "--filters", "0:65"], "out of range"),
        (["grids", "--filters", "60:70", "--layers", "block1_conv1"], "0..63"),
        (["grids", "--model", "resnet9000"], "choose from vgg16, vgg16-hed, efficientnet-lite0"),
        (["heatmaps", "samples/photos", "--model", "vgg16-hed"], "efficientnet-lite0"),
        (["heatmaps", "samples/photos", "--class", "1000"], "out of range"),
        (["heatmaps", "samples/photos", "--class", "unicornfish"], "unknown class"),
        (["heatmaps", "no/such/folder"], "no such file"),
        (["grids", "--precision", "float8"], "precision must be one of float32, bfloat16"),
        (["heatmaps", "samples/photos", "--precision", "half"], "precision must be one of"),
    ],
)
def test_bad_requests_are_refused_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    p = run(*args, "--out", str(tmp_path / "out"), cwd=repo)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr
    assert not (tmp_path / "out").exists()


def test_vgg16_without_weights_names_the_offline_models(tmp_path: Path) -> None:
    p = run("grids", "--model", "vgg16", "--out", str(tmp_path),
            env={"HOME": str(tmp_path), "CONVATLAS_VGG16_WEIGHTS": ""})
    assert p.returncode == 2
    assert "vgg16-hed" in p.stderr and "efficientnet-lite0" in p.stderr


def test_models_lists_all_with_availability() -> None:
    p = run("models", env={"CONVATLAS_PRECISION": ""})
    assert p.returncode == 0, p.stderr
    assert "vgg16-hed" in p.stdout and "efficientnet-lite0" in p.stdout
    assert "block5_conv1(512)" in p.stdout and "available offline" in p.stdout
    flags = Path("/proc/cpuinfo").read_text().split()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert "precision: default float32" in p.stdout
    assert ("bfloat16 is native on this CPU" in p.stdout) == native
    assert ("no native bfloat16" in p.stdout) == (not native)


def test_grid_run_is_complete_and_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["grids", "--layers", "block1_conv1", "--filters", "0:64", "--size", "32", "--steps", "3",
            "--out", str(out), "-q"]
    p = run(*args)
    assert p.returncode == 0, p.stderr
    assert "64 done, 0 failed" in p.stdout and "64 jobs run" in p.stdout
    report_path = next(out.glob("runs/*/report.json"))
    report = json.loads(report_path.read_text())
    grid = decode_image((out / report["grids"][0]["png"]).read_bytes())
    assert grid.shape == (8 * 32 + 7 * 5,) * 2 + (3,)
    tile = decode_image((out / report["jobs"][9]["outputs"]["png"]).read_bytes())
    np.testing.assert_array_equal(grid[37:69, 37:69], tile)  # filter 9 = row 1, col 1
    p2 = run(*args)
    assert p2.returncode == 0 and "0 jobs run" in p2.stdout


def test_heatmap_run_reports_a_bad_file_and_finishes_the_rest(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sample_photos()[:2]:
        (photos / p.name).write_bytes(p.read_bytes())
    (photos / "copy of cat.png").write_bytes(sample_photos()[1].read_bytes())
    (photos / "broken.jpg").write_bytes(b"this is not a jpeg")
    out = tmp_path / "out"
    p = run("heatmaps", str(photos), "--out", str(out), "-q")
    assert p.returncode == 1  # a failed image makes the exit status say so
    report = json.loads(next(out.glob("runs/*/report.json")).read_text())
    assert report["counts"]["done"] == 2 and report["counts"]["failed"] == 1
    failed = [j for j in report["jobs"] if j["status"] == "failed"]
    assert failed[0]["name"] == "broken.jpg" and "not an image" in failed[0]["error"].lower()
    assert "broken.jpg" in p.stdout
    for j in report["jobs"]:
        if j["status"] == "done":
            record = json.loads((out / j["outputs"]["record"]).read_text())
            assert len(record["top"]) == 3
            w, h = record["image_size"]
            assert decode_image((out / j["outputs"]["overlay"]).read_bytes()).shape == (h, w, 3)
            assert np.load(out / j["outputs"]["cam"]).shape == (7, 7)
    assert len(report["duplicates"]) == 1


def test_precision_runs_are_kept_apart_and_each_idempotent(tmp_path: Path) -> None:
    """A bfloat16 run does not reuse float32 results (nor the reverse); CONVATLAS_PRECISION sets
    the default and --precision overrides it."""
    out = tmp_path / "out"
    args = ["grids", "--layers", "block2_conv1", "--filters", "0:4", "--size", "32", "--steps", "3",
            "--out", str(out), "-q"]
    p = run(*args, env={"CONVATLAS_PRECISION": "bfloat16"})
    assert p.returncode == 0 and "4 jobs run" in p.stdout, p.stdout + p.stderr
    records = [json.loads(f.read_text()) for f in out.glob("results/**/f000?.json")]
    assert len(records) == 4 and {r["precision"] for r in records} == {"bfloat16"}
    p = run(*args, "--precision", "float32")
    assert p.returncode == 0 and "4 jobs run" in p.stdout, p.stdout + p.stderr
    p = run(*args, "--precision", "bfloat16")
    assert p.returncode == 0 and "0 jobs run" in p.stdout, p.stdout + p.stderr
    grids = sorted(out.glob("results/**/grid-page00.png"))
    assert len(grids) == 2 and sum("-bf16" in str(g) for g in grids) == 1
