"""Filter patterns: the ascent really maximises each filter, batching changes nothing, dead filters
are found and rescued, and the offline weights are told apart from an untrained network."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from convatlas.shared.engine.objectives import deprocess, feature_model, start_image
from convatlas.shared.engine.patterns import PatternParams, filter_patterns
from convatlas.shared.models.registry import BUILTIN, LoadedModel, get_model

FAST = PatternParams(size=32, steps=20)


@pytest.fixture(scope="module")
def hed() -> LoadedModel:
    return get_model("vgg16-hed")


def activations(lm: LoadedModel, layer: str, images: np.ndarray) -> np.ndarray:
    """Mean post-activation of every channel, per image: (N, C), computed plainly in eager mode."""
    _, post = feature_model(lm.any_size_model(), layer)(lm.preprocess(images.astype("float32")))
    return keras.ops.convert_to_numpy(keras.ops.mean(post, axis=(1, 2)))


@pytest.mark.parametrize("layer", ["block1_conv1", "block3_conv1"])
def test_each_pattern_drives_its_own_filter(hed: LoadedModel, layer: str) -> None:
    filters = list(range(12))
    pats = filter_patterns(hed, layer, filters, FAST)
    raw = np.stack([p.raw for p in pats])
    start = np.stack([start_image(f, FAST.size, FAST.seed) for f in filters])
    act = activations(hed, layer, raw)[:, filters]  # act[i, j]: filter j on pattern i
    act0 = activations(hed, layer, start)[:, filters]
    checked = 0
    for i, p in enumerate(pats):
        if p.dead:
            continue
        checked += 1
        own = act[i, i]
        others = np.mean([act[k, i] for k in range(len(filters)) if k != i])
        assert own > 3 * act0[i, i] + 1.0, (layer, i, own, act0[i, i])
        assert own > others, (layer, i, own, others)
        assert p.final_activation == pytest.approx(own, rel=1e-3, abs=1e-3)
    assert checked >= len(filters) // 2


def test_batch_composition_does_not_change_a_pattern(hed: LoadedModel) -> None:
    alone = filter_patterns(hed, "block2_conv1", [5], FAST)[0]
    batched = filter_patterns(hed, "block2_conv1", [1, 5, 9], FAST)[1]
    assert batched.filter == 5
    np.testing.assert_allclose(alone.raw, batched.raw, rtol=1e-4, atol=1e-3)
    other_seed = filter_patterns(hed, "block2_conv1", [5], PatternParams(size=32, steps=20, seed=1))[0]
    assert np.abs(other_seed.raw - alone.raw).mean() > 0.1


def test_a_filter_the_layer_lacks_is_refused_with_its_range(hed: LoadedModel) -> None:
    with pytest.raises(ValueError, match=r"block1_conv1 has 64 filters \(0–63\); asked for \[64\]"):
        filter_patterns(hed, "block1_conv1", [0, 64], PatternParams(size=16, steps=1))


@pytest.mark.parametrize(("model", "layer"), [("vgg16-hed", "block5_conv3"), ("inception-v3", "mixed10"),
                                             ("xception", "block14_sepconv2_act"), ("mobilenet", "conv_pw_13_relu"),
                                             ("densenet121", "relu")])
def test_a_layers_min_size_is_where_its_map_ends(model: str, layer: str) -> None:
    """The table's smallest pattern size is the real boundary, by Keras's own shape inference:
    at it the layer has a map, one pixel less a window no longer fits (TensorFlow's CPU
    depthwise kernel would still return a map there, of padding only)."""
    from convatlas.shared.models import applications
    from convatlas.shared.models.registry import find_layer, get_spec

    need = find_layer(model, layer).min_size
    assert need > 1
    built = applications.build(model) if model in applications.APPS else get_spec(model).build()
    flexible = LoadedModel(get_spec(model), built, "0" * 64, 0.0).any_size_model()
    trunk = keras.Model(flexible.input, flexible.get_layer(layer).output)

    def side(s: int) -> int:
        return min(trunk.compute_output_spec(keras.KerasTensor((1, s, s, 3))).shape[1:3])

    assert side(need) >= 1
    try:
        assert side(need - 1) < 1
    except ValueError as e:  # Keras refuses a negative output size outright
        assert "negative" in str(e).lower() or "size" in str(e).lower(), e


def test_a_pattern_size_too_small_for_a_layer_is_refused_before_queueing() -> None:
    from convatlas.producer.plans.grids import plan_grids
    from convatlas.producer.plans.plan import PlanError
    from convatlas.producer.plans.validate import check_pattern_size
    from convatlas.shared.config import Settings

    with pytest.raises(PlanError, match=r"--size 8 is too small .* block5_conv3 needs 16 px \(use --size 16"):
        plan_grids("vgg16-hed", "block5_conv3", "0:4", PatternParams(size=8), Settings.from_env())
    assert len(plan_grids("vgg16-hed", "block5_conv3", "0:4", PatternParams(size=16), Settings.from_env()).jobs) == 4
    with pytest.raises(PlanError, match=r"mixed10 needs 75"):
        check_pattern_size("inception-v3", [("mixed10", 2048)], 64)
    check_pattern_size("inception-v3", [("conv2d", 32)], 8)  # an early layer is fine at 8


def test_dead_filters_are_detected_and_rescued(hed: LoadedModel) -> None:
    filters = list(range(24))
    rescued = filter_patterns(hed, "block5_conv1", filters, FAST)
    dead = [p for p in rescued if p.dead]
    assert dead, "block5_conv1 of vgg16-hed has filters that are silent on grey noise"
    for p in dead:
        assert p.start_activation == 0.0 and p.fallback_used
    assert any(p.final_activation > 0 for p in dead)
    plain = filter_patterns(hed, "block5_conv1", [p.filter for p in dead],
                            PatternParams(size=32, steps=20, fallback="none"))
    for p in plain:
        assert p.dead and not p.fallback_used
        np.testing.assert_allclose(p.raw, start_image(p.filter, 32, 0), atol=1e-4)


def test_real_weights_differ_from_untrained_vgg16(hed: LoadedModel) -> None:
    untrained = LoadedModel(BUILTIN["vgg16-hed"],
                            keras.applications.VGG16(weights=None, include_top=False), "random", 0.0)
    for layer in ("block1_conv1", "block3_conv1"):
        real = np.median([p.final_activation for p in filter_patterns(hed, layer, list(range(16)), FAST)])
        rand = np.median([p.final_activation for p in filter_patterns(untrained, layer, list(range(16)), FAST)])
        assert real > 3 * rand, (layer, real, rand)


def test_deprocess_is_the_books() -> None:
    x = np.random.default_rng(0).normal(100, 30, (8, 8, 3))
    out = deprocess(x)
    assert out.dtype == np.uint8
    ref = np.clip(((x - x.mean()) / (x.std() + 1e-5)) * 0.1 + 0.5, 0, 1) * 255
    np.testing.assert_array_equal(out, ref.astype("uint8"))


def test_start_image_is_the_books_grey_noise() -> None:
    img = start_image(3, 64, 0)
    assert img.shape == (64, 64, 3) and img.min() >= 128 and img.max() < 148
    np.testing.assert_array_equal(img, start_image(3, 64, 0))


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError):
        PatternParams(size=2)
    with pytest.raises(ValueError):
        PatternParams(fallback="magic")


def test_efficientnet_patterns_run_at_64px() -> None:
    lm = get_model("efficientnet-lite0")
    pats = filter_patterns(lm, "block2a_expand_conv", [0, 1], PatternParams(size=64, steps=3))
    assert pats[0].image.shape == (64, 64, 3)


@pytest.mark.parametrize("layer", ["block1_conv1", "block2_conv2", "block3_conv1"])
def test_one_channel_conv_equals_the_full_layer(hed: LoadedModel, layer: str) -> None:
    """The fast path (only each sample's own channel at the target conv) computes exactly what
    the full layer gives for that channel, before and after the ReLU."""
    from convatlas.shared.engine.objectives import selected_channels

    filters = np.array([3, 0, 17, 3], dtype="int32")
    x = hed.preprocess(np.stack([start_image(int(f), 24, 1) for f in filters]))
    pre, post = selected_channels(hed.model, layer)(x, filters)
    full_pre, full_post = feature_model(hed.model, layer)(x)
    for got, full in ((pre, full_pre), (post, full_post)):
        got, full = keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(full)
        want = np.stack([full[i, :, :, f] for i, f in enumerate(filters)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
