"""A user's own .keras file works like a built-in model: grids, heatmaps, content-addressed keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from convatlas.shared.images.decode import decode_image
from convatlas.shared.samples import sample_photos


def _tiny_classifier(path: Path) -> None:
    keras.utils.set_random_seed(0)
    inp = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="conv_a")(inp)
    x = keras.layers.Conv2D(16, 3, activation="relu", padding="same", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, name="logits")(x)
    keras.Model(inp, out).save(path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convatlas.producer.cli", *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))


def test_user_keras_model_grids_and_heatmaps(tmp_path: Path) -> None:
    model = tmp_path / "my model.keras"
    _tiny_classifier(model)
    ref = f"{model}#tf"
    out = tmp_path / "out"
    g = _cli("grids", "--model", ref, "--layers", "last_conv", "--filters", "all", "--size", "32",
             "--steps", "2", "--out", str(out), "-q")
    assert g.returncode == 0, g.stderr
    report = json.loads(next(out.glob("runs/g-*/report.json")).read_text())
    assert report["counts"]["done"] == 16
    grid_key = report["grids"][0]["png"]
    assert grid_key.startswith("results/file-") and " " not in grid_key  # path never in keys
    grid = decode_image((out / grid_key).read_bytes())
    assert grid.shape == (291, 291, 3) and grid[-32:, -32:].max() == 0  # 16 filters: rest black

    h = _cli("heatmaps", str(sample_photos()[0]), "--model", ref, "--out", str(out), "-q")
    assert h.returncode == 0, h.stderr
    report = json.loads(next(out.glob("runs/h-*/report.json")).read_text())
    (job,) = report["jobs"]
    record = json.loads((out / job["outputs"]["record"]).read_text())
    assert record["layer"] == "last_conv" and len(record["top"]) == 3
    assert np.load(out / job["outputs"]["cam"]).shape == (64, 64)

    bad = _cli("grids", "--model", ref, "--layers", "nope", "--out", str(out))
    assert bad.returncode == 2 and "last_conv" in bad.stderr
