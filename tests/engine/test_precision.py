"""bfloat16 network passes: the same weights, results close to float32 ones, kept apart by key.

Speed is not tested here (bench/bench_engine.py measures it side by side); these tests check
that the bfloat16 mode really computes in bfloat16, still does each engine's job, and that its
results can never be mistaken for float32 ones.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from convatlas.shared.engine.cam_runner import grad_cam
from convatlas.shared.engine.objectives import start_image
from convatlas.shared.engine.patterns import PatternParams, filter_patterns
from convatlas.shared.images.decode import load_image
from convatlas.shared.jobs import FilterJob, GradcamJob, GridJob, grid_from_dict, job_from_dict
from convatlas.shared.models.mixed import with_precision
from convatlas.shared.models.registry import get_model
from convatlas.shared.samples import sample_photos
from tests.engine.test_patterns import activations

BF16 = PatternParams(size=32, steps=20, precision="bfloat16")
SHA = "ab" * 32


def test_clone_computes_in_bfloat16_with_the_same_weights() -> None:
    hed = get_model("vgg16-hed")
    bf = hed.any_size_model("bfloat16")
    assert bf is hed.any_size_model("bfloat16")  # built once per process
    assert bf is not hed.any_size_model()
    convs = [layer for layer in bf.layers if type(layer).__name__ == "Conv2D"]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    for a, b in zip(hed.any_size_model().get_weights(), bf.get_weights(), strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    out = bf(np.zeros((1, 32, 32, 3), np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"


def test_bfloat16_patterns_drive_their_own_filters_as_hard_as_float32() -> None:
    """Activations measured in float32: each bfloat16 pattern drives its own filter more than
    the start noise and the other patterns do, and about as hard as the float32 pattern."""
    hed = get_model("vgg16-hed")
    filters = list(range(12))
    pats = filter_patterns(hed, "block3_conv1", filters, BF16)
    ref = filter_patterns(hed, "block3_conv1", filters, PatternParams(size=32, steps=20))
    act = activations(hed, "block3_conv1", np.stack([p.raw for p in pats]))[:, filters]
    act0 = activations(hed, "block3_conv1", np.stack([start_image(f, 32, 0) for f in filters]))[:, filters]
    live = [i for i, p in enumerate(pats) if not p.dead]
    assert len(live) >= 6
    ratios = []
    for i in live:
        others = np.mean([act[k, i] for k in range(len(filters)) if k != i])
        assert act[i, i] > 2 * act0[i, i] + 1.0 and act[i, i] > others, (i, act[i, i], others)
        assert pats[i].final_activation == pytest.approx(act[i, i], rel=0.05)
        ratios.append(act[i, i] / ref[i].final_activation)
    assert min(ratios) > 0.8 and np.mean(ratios) > 0.9, ratios
    assert any(not np.array_equal(p.raw, r.raw) for p, r in zip(pats, ref, strict=True))


def test_bfloat16_gradcam_is_close_to_float32() -> None:
    """Heatmaps are compared for the same class. A photo whose top two classes are nearly tied
    (one sample's top-1 is a 4 % go-kart) may pick another top-1 in bfloat16: that is rounding,
    so its own top-1 must only be one of float32's top 3; a clear winner must stay the winner."""
    eff = get_model("efficientnet-lite0")
    photos = [load_image(p) for p in sample_photos()]
    f32 = grad_cam(eff, photos)
    own = grad_cam(eff, photos, precision="bfloat16")
    bf = grad_cam(eff, photos, [a.class_index for a in f32], precision="bfloat16")
    clear = 0
    for a, o, b in zip(f32, own, bf, strict=True):
        p = [t.probability for t in a.top]
        if p[0] - p[1] > 0.05:
            clear += 1
            assert o.class_index == a.class_index, (a.top, o.top)
        else:
            assert o.class_index in {t.index for t in a.top}, (a.top, o.top)
        assert b.class_index == a.class_index and b.layer == a.layer
        assert b.top[0].probability == pytest.approx(a.top[0].probability, abs=0.03)
        assert np.abs(a.heatmap - b.heatmap).max() < 0.1
        assert np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1] > 0.99
        assert not np.array_equal(a.heatmap, b.heatmap)  # it really ran in another precision
    assert clear >= len(photos) // 2  # the rule above is not vacuous


def test_precision_is_part_of_every_key_and_survives_json() -> None:
    f32 = FilterJob("vgg16-hed", "w" * 12, "block3_conv1", 5)
    bf = FilterJob("vgg16-hed", "w" * 12, "block3_conv1", 5, PatternParams(precision="bfloat16"))
    assert f32.prefix != bf.prefix and bf.prefix.endswith("-bf16")
    assert "bf16" not in f32.prefix  # float32 keys are the ones made before the option existed
    assert job_from_dict(bf.to_dict()) == bf
    grid = GridJob("vgg16-hed", "w" * 12, "block3_conv1", 0, (0, 1), PatternParams(precision="bfloat16"))
    assert grid_from_dict(grid.to_dict()) == grid
    assert {t.prefix for t in grid.tile_jobs()} == {grid.prefix} != {f32.prefix}
    g32 = GradcamJob("efficientnet-lite0", "w" * 12, SHA)
    gbf = GradcamJob("efficientnet-lite0", "w" * 12, SHA, precision="bfloat16")
    assert g32.prefix != gbf.prefix and job_from_dict(gbf.to_dict()) == gbf
    with pytest.raises(ValueError, match="precision"):
        PatternParams(precision="float16")


def test_user_model_with_custom_layer_is_refused_clearly() -> None:
    class Doubler(keras.layers.Layer):
        def call(self, x):  # noqa: ANN001, ANN201
            return x * 2

        def get_config(self):  # noqa: ANN201
            raise NotImplementedError("no config")

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, Doubler()(keras.layers.Conv2D(4, 3)(inp)), name="custom")
    with pytest.raises(ValueError, match="cannot run in bfloat16"):
        with_precision(model, "bfloat16")
    assert with_precision(model, "float32") is model
