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


# --- seed stability and path similarity (scored over stored results: convatlas.shared.atlas.scores)


def test_seed_stability_of_identical_profiles_is_one_and_of_unrelated_ones_low() -> None:
    from convatlas.shared.engine.quality import seed_stability

    rng = np.random.default_rng(0)
    one = rng.random(256)
    assert seed_stability(np.stack([one, one, one])) == pytest.approx(1.0)
    assert abs(seed_stability(rng.random((3, 256)))) < 0.2
    assert seed_stability(np.stack([one, np.full(256, 3.0), one])) == pytest.approx(1 / 3)  # flat: 0


def test_path_similarity_of_the_best_example_itself_is_one() -> None:
    from convatlas.shared.engine.quality import path_similarity

    rng = np.random.default_rng(1)
    pattern = [rng.random(8), rng.random(16)]
    examples = [np.stack([pattern[0], rng.random(8)]), np.stack([pattern[1], rng.random(16)])]
    best, mean = path_similarity(pattern, examples)
    assert best == pytest.approx(1.0) and mean < best


def _two_layers(path: Path) -> LoadedModel:
    keras.utils.set_random_seed(3)
    inp = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="conv_a")(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv_b")(x)
    keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x)).save(path)
    return get_model(f"{path}#none")


def test_atlas_scores_a_pattern_equal_to_its_best_example_and_three_equal_seeds(tmp_path: Path) -> None:
    """Constructed storage: unit 0 of conv_b has three seeds' patterns that are the same image,
    that image is also its best example's patch (the whole photo), a second example is noise.
    Path similarity ≈ 1, seed stability 1, kept in a record that the next build reads back."""
    from convatlas.shared import keys
    from convatlas.shared.atlas.gather import (
        Gathered,
        Layer,
        PatternRef,
        Unit,
        Variant,
        slug_fields,
    )
    from convatlas.shared.atlas.scores import quality_key, score_atlas
    from convatlas.shared.engine.patterns import PatternParams
    from convatlas.shared.images.encode import encode_png
    from convatlas.shared.storage import LocalStorage

    _two_layers(tmp_path / "two.keras")
    storage = LocalStorage(tmp_path / "out")
    rng = np.random.default_rng(4)
    x = np.arange(SIDE, dtype=np.float32)
    image = np.broadcast_to((128 + 100 * np.sin(2 * np.pi * x / 6))[None, :, None], (SIDE, SIDE, 3))
    image = np.ascontiguousarray(image.astype(np.uint8))
    noise = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    layer = Layer("conv_b", "Conv2D", 4)
    for seed in range(3):
        slug = PatternParams(size=SIDE, steps=5, seed=seed).slug()
        prefix = keys.pattern_prefix("two", "0" * 64, "conv_b", slug)
        v = Variant("book", slug, prefix, False, slug_fields(slug) or {}, units={0})
        layer.variants.append(v)
        storage.put_bytes(keys.pattern_key(prefix, 0, "png"), encode_png(image), "image/png")
    examples = []
    for rank, pic in enumerate((image, noise)):
        sha = f"{rank:064x}"
        storage.put_bytes(keys.input_key(sha), encode_png(pic), "image/png")
        examples.append({"rank": rank, "image_sha256": sha, "position": [0, 0],
                         "box": [0, 0, SIDE, SIDE], "score": 1.0 - rank})
    unit = Unit("conv_b", 0, examples={"input_side": SIDE, "examples": examples})
    v0 = layer.variants[0]
    unit.patterns["book"] = [PatternRef(v0, {}, keys.pattern_key(v0.prefix, 0, "png"))]
    layer.units = [unit]
    found = Gathered(f"{tmp_path / 'two.keras'}#none", "0" * 64, "cfg",
                     [Layer("conv_a", "Conv2D", 8), layer], {})
    score_atlas(storage, found)
    q = unit.patterns["book"][0].quality
    assert q is not None and q["path_layers"] == ["conv_a"] and q["examples_used"] == 2
    assert q["path_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert q["path_similarity_mean"] < q["path_similarity"] and q["path_flagged"] is False
    assert q["seed_stability"] == pytest.approx(1.0, abs=1e-5)
    ref = unit.patterns["book"][0]
    key = quality_key(ref, unit, layer.variants[1:], "cfg")
    assert storage.exists(key)
    storage.put_bytes(key, b'{"seed_stability": 0.25, "path_similarity": 0.5}', "application/json")
    score_atlas(storage, found)  # read back, not scored again
    assert ref.quality == {"seed_stability": 0.25, "path_similarity": 0.5}
