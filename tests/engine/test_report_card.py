"""The CAM report card: ranking on a network where the right map is known by construction, the
sanity baselines below real methods on the offline classifier, the randomisation check flagging
a map that ignores the weights, the card's key and sample, and the CLI's report-card → heatmaps
``--method auto --layer auto`` round trip."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import keras
import numpy as np
import pytest

from convatlas.shared.engine.faithfulness import Protocol
from convatlas.shared.engine.report_card import BASELINES, ImageMethod, store
from convatlas.shared.engine.report_card.card import candidate_layers, compute_card
from convatlas.shared.engine.report_card.randomisation import Randomisation
from convatlas.shared.models.registry import LoadedModel, get_model
from convatlas.shared.samples import sample_photos

SIZE, CELL = 32, 4
CHEAP = Protocol(steps=5, road_percentiles=(30, 70), road_iterations=16, road_coarse_iterations=8)
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LaplacianEdges(ImageMethod):
    """Test-only "method": an edge detector that never looks at the network."""

    name: ClassVar[str] = "laplacian"

    def map(self, image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(np.asarray(image, np.float32), cv2.COLOR_RGB2GRAY)
        edges = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
        return edges / max(float(edges.max()), 1e-6)


@pytest.fixture(scope="module")
def cam_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """Global-average-pooled 8×8 cells → linear classifier, so Grad-CAM is the exact per-cell
    contribution to the class-0 logit (Zhou et al.'s CAM identity): right by construction.
    Channel 0 ("red minus blue", the only one the class uses) is weak; channel 1 ("blue minus
    red", unused by the class) is ten times stronger, so Eigen-CAM's principal component follows
    the distractor instead."""
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, CELL, strides=CELL, activation="relu", name="cells")
    pooled = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    dense = keras.layers.Dense(2, name="logits")
    model = keras.Model(inputs, dense(pooled))
    k = np.zeros((CELL, CELL, 3, 2), np.float32)
    k[:, :, 0, 0], k[:, :, 2, 0] = 1 / CELL**2, -1 / CELL**2  # red − blue
    k[:, :, 2, 1], k[:, :, 0, 1] = 10 / CELL**2, -10 / CELL**2  # 10 × (blue − red)
    conv.set_weights([k, np.zeros(2, np.float32)])
    dense.set_weights([np.array([[40.0, 0.0], [0.0, 0.0]], np.float32), np.zeros(2, np.float32)])
    path = Path(tmp_path_factory.mktemp("card")) / "cam.keras"
    model.save(path)
    return get_model(f"{path}#tf")


def constructed_photos() -> list[tuple[str, str, np.ndarray]]:
    out = []
    for i in range(3):
        rng = np.random.default_rng(i)
        img = rng.integers(90, 110, (SIZE, SIZE, 3)).astype(np.uint8)  # grey: both channels ~0
        r, c = 4 + 4 * i, 4 + 2 * i
        img[r:r + 8, c:c + 8] = (240, 60, 60)  # the class's evidence: red
        img[20:32, 16:32] = (40, 40, 250)  # the distractor: blue, strong on channel 1
        out.append((f"c{i}", hashlib.sha256(img.tobytes()).hexdigest(), img))
    return out


def test_the_method_right_by_construction_ranks_first(cam_model: LoadedModel) -> None:
    card = compute_card(cam_model, constructed_photos(), ("gradcam", "eigencam"), ["cells"],
                        CHEAP, Randomisation(layers=1), batch_size=8, pass_batch=32)
    order = [r["method"] for r in card["rows"]]
    assert order[0] == "gradcam", card["rows"]
    assert order.index("eigencam") > 0
    assert card["recommended"]["method"] == "gradcam" and card["recommended"]["layer"] == "cells"
    assert {r["method"] for r in card["rows"] if r["baseline"]} == set(BASELINES)


def test_randomisation_flags_a_map_that_ignores_the_weights(cam_model: LoadedModel) -> None:
    card = compute_card(cam_model, constructed_photos(), ("gradcam",), ["cells"], CHEAP,
                        Randomisation(layers=2), baselines=(LaplacianEdges(),), batch_size=8)
    rows = {r["method"]: r for r in card["rows"]}
    assert card["randomisation"]["randomised_layers"] == ["logits", "cells"]
    assert rows["laplacian"]["flagged"] and rows["laplacian"]["randomised_spearman"] == 1.0
    assert not rows["gradcam"]["flagged"], rows["gradcam"]


def test_candidate_layers_are_the_default_then_earlier_stage_ends() -> None:
    lm = get_model("efficientnet-lite0")
    assert candidate_layers(lm) == ["top_activation", "block6a_expand_relu", "block4a_expand_relu"]


def effnet_photos(count: int) -> list[tuple[str, str, np.ndarray]]:
    from convatlas.shared.images.decode import decode_image

    out = []
    for p in sample_photos()[:count]:
        data = p.read_bytes()
        out.append((p.name, hashlib.sha256(data).hexdigest(), decode_image(data)))
    return out


def test_baselines_rank_below_real_methods_on_the_offline_classifier() -> None:
    lm = get_model("efficientnet-lite0")
    card = compute_card(lm, effnet_photos(4), ("gradcam", "gradcam++", "layercam", "eigencam"),
                        ["top_activation"], CHEAP, batch_size=4, pass_batch=32)
    real = [r["score"] for r in card["rows"] if not r["baseline"]]
    base = [r["score"] for r in card["rows"] if r["baseline"]]
    assert len(real) == 4 and len(base) == 2
    assert min(real) > max(base), card["rows"]
    sobel = next(r for r in card["rows"] if r["method"] == "sobel")
    assert sobel["flagged"]  # an edge map never depends on the weights


def test_the_sample_and_the_key_follow_the_content() -> None:
    photos = [("a", "33"), ("b", "11"), ("c", "22"), ("d", "11")]
    assert store.sample(photos, 2) == [1, 2]
    assert store.sample(list(reversed(photos)), 2) == [2, 1]  # the same photos (b / d are one)
    req = {"methods": ["gradcam"], "layers": ["x"], "protocol": CHEAP.describe()}
    key = store.card_key("efficientnet-lite0", "w", ["11", "22"], req)
    assert key == store.card_key("efficientnet-lite0", "w", ["22", "11"], req)
    changed = [{**req, "protocol": Protocol().describe()}, {**req, "layers": ["y"]},
               {**req, "methods": ["layercam"]}]
    assert all(store.card_key("efficientnet-lite0", "w", ["11", "22"], r) != key for r in changed)
    assert store.card_key("efficientnet-lite0", "w", ["11"], req) != key


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convatlas.producer.cli", *args],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ),
                          timeout=900)


def test_heatmaps_auto_without_a_card_names_the_command(tmp_path: Path) -> None:
    p = cli("heatmaps", "samples/photos/chelsea.png", "--method", "auto", "--layer", "auto",
            "--out", str(tmp_path / "out"))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "convatlas report-card" in p.stderr


def test_cli_report_card_then_heatmaps_auto(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("report-card", "samples/photos", "--sample", "2", "--methods", "gradcam,layercam",
            "--layers", "top_activation,block6a_expand_relu", "--steps", "4",
            "--road-percentiles", "50", "--out", str(out))
    p = cli(*args)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "recommended:" in p.stdout
    cards = list((out / "report-cards" / "efficientnet-lite0").glob("*/card.json"))
    assert len(cards) == 1 and (cards[0].parent / "index.html").is_file()
    card = json.loads(cards[0].read_text())
    assert len(card["photos"]) == 2 and len(card["rows"]) == 2 * 2 + 2
    rec = card["recommended"]
    again = cli(*args)
    assert again.returncode == 0 and "reused" in again.stdout, again.stdout + again.stderr

    p = cli("heatmaps", "samples/photos/chelsea.png", "--method", "auto", "--layer", "auto",
            "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr
    records = [json.loads(f.read_text()) for f in (out / "results").rglob("record.json")]
    assert len(records) == 1
    assert records[0]["layer"] == rec["layer"] and list(records[0]["methods"]) == [rec["method"]]
