"""Per-pattern quality scores on constructed cases (issue 27 item 2): a constant image has low
transform robustness, a periodic texture the unit likes keeps its activation; the pattern job
keeps the scores in its record."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from convatlas.shared.engine.objectives import selected_channels
from convatlas.shared.engine.quality import pattern_scores
from convatlas.shared.models.registry import LoadedModel, get_model

SIDE = 32


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """One conv layer: unit 0 a vertical-edge detector (zero-sum kernel), unit 1 brightness."""
    path: Path = tmp_path_factory.mktemp("quality") / "edges.keras"
    inp = keras.Input((SIDE, SIDE, 3))
    conv = keras.layers.Conv2D(2, 3, activation="relu", padding="valid", use_bias=False, name="conv")
    out = keras.layers.GlobalAveragePooling2D()(conv(inp))
    k = np.zeros((3, 3, 3, 2), np.float32)
    k[:, 0, :, 0], k[:, 2, :, 0] = -1.0, 1.0  # d/dx
    k[1, 1, :, 1] = 1.0 / 3
    conv.set_weights([k])
    keras.Model(inp, out).save(path)
    return get_model(f"{path}#none")


def test_constant_image_has_low_robustness_and_stripes_high(edges: LoadedModel) -> None:
    features = selected_channels(edges.any_size_model("float32"), "conv")
    constant = np.full((1, SIDE, SIDE, 3), 128.0, np.float32)
    x = np.arange(SIDE, dtype=np.float32)
    stripes = np.broadcast_to((128 + 100 * np.sin(2 * np.pi * x / 8))[None, None, :, None],
                              (1, SIDE, SIDE, 3)).astype(np.float32)
    robust, peak = pattern_scores(features, edges.preprocess, np.concatenate([constant, stripes]), [0, 0])
    assert robust[0] == 0.0 and peak[0] == 0.0  # the edge unit sees nothing in a flat image
    assert robust[1] > 0.6 and peak[1] > 0  # a periodic texture survives jitter, scale, rotation
    bright, _ = pattern_scores(features, edges.preprocess, constant, [1])
    assert 0.0 <= bright[0] <= 1.0


def test_pattern_records_keep_the_scores(edges: LoadedModel, tmp_path: Path) -> None:
    from convatlas.shared.engine.patterns import PatternParams, filter_patterns

    got = filter_patterns(edges, "conv", [0, 1], PatternParams(size=SIDE, steps=5))
    for p in got:
        assert p.robustness is not None and 0.0 <= p.robustness <= 1.0
        assert p.peak_activation is not None and p.peak_activation >= p.final_activation
