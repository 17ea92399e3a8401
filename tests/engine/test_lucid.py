"""The lucid style: Fourier parametrisation, transforms, Adam; selective, reproducible, kept apart
from the book's results by key. Small sizes and few steps: quality is measured in bench/."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from convatlas.shared.engine.objectives import start_image
from convatlas.shared.engine.optimisers import Adam
from convatlas.shared.engine.param.fourier import (
    COLOR_CORRELATION_SVD_SQRT,
    COLOR_TO_RGB,
    FourierImage,
    spectrum_scale,
)
from convatlas.shared.engine.patterns import PatternParams, filter_patterns
from convatlas.shared.engine.styles import STYLES, get_style
from convatlas.shared.engine.transforms import (
    CropTo,
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    Warp,
    apply_transforms,
    draw_uniforms,
    lucid_transforms,
    n_random,
)
from convatlas.shared.keys import pattern_prefix
from convatlas.shared.models.registry import LoadedModel, get_model
from tests.engine.test_patterns import activations

LUCID = PatternParams(size=32, steps=48, style="lucid")


@pytest.fixture(scope="module")
def hed() -> LoadedModel:
    return get_model("vgg16-hed")


def smooth_image(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Natural-ish test pictures strictly inside 0–255: blurred noise plus a gradient."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (n, size, size, 3))
    k = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    k /= k.sum()
    for axis in (1, 2):
        noise = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), axis, noise)
    ramp = np.linspace(-1, 1, size)[None, :, None, None]
    img = 128 + 60 * noise / noise.std() + 40 * ramp
    return np.clip(img, 5, 250).astype(np.float32)


# --- parametrisation ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 33])
def test_fourier_round_trips_an_image(size: int) -> None:
    param = FourierImage(size)
    img = smooth_image(2, size)
    v = param.from_pixels(img)
    assert v.shape == (2, *param.shape)
    back = ops.convert_to_numpy(param.to_pixels(ops.convert_to_tensor(v)))
    assert back.shape == img.shape
    np.testing.assert_allclose(back, img, atol=0.05)
    np.testing.assert_allclose(param.to_pixels_numpy(v), img, atol=0.05)


def test_fourier_graph_equals_numpy_reference_on_random_spectra() -> None:
    param = FourierImage(24)
    v = np.random.default_rng(3).normal(0, 0.05, (3, *param.shape)).astype(np.float32)
    got = ops.convert_to_numpy(param.to_pixels(ops.convert_to_tensor(v)))
    np.testing.assert_allclose(got, param.to_pixels_numpy(v), atol=1e-3)
    assert got.min() > 0 and got.max() < 255


def test_lucid_constants() -> None:
    scale = spectrum_scale(64, 64)
    assert scale.shape == (64, 33)
    # DC is capped at 1 / (1 / max(w, h)); the highest frequency (0.5, 0.5) gets 1 / (√2 / 2)
    assert scale[0, 0] == pytest.approx(64 * 64)
    assert scale[32, 32] == pytest.approx(64 / (np.sqrt(0.5)), rel=1e-5)
    assert scale[0, 1] == pytest.approx(64 * 64)  # f = 1/64 is exactly the cap
    assert scale[0, 2] == pytest.approx(64 * 32)
    norm = np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
    np.testing.assert_allclose(COLOR_TO_RGB, (COLOR_CORRELATION_SVD_SQRT / norm).T)
    start = FourierImage(64).init(0, 0)
    assert start.std() == pytest.approx(0.01, rel=0.05)
    px = FourierImage(64).to_pixels_numpy(start[None])
    assert abs(px.mean() - 127.5) < 3 and px.std() < 10  # Lucid's start: nearly uniform grey


# --- transforms -----------------------------------------------------------------------------


def _uniforms(transforms: tuple, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, n_random(transforms))).astype(np.float32)


@pytest.mark.parametrize("size", [16, 64])
def test_transforms_keep_shape_and_value_range(size: int) -> None:
    x = np.random.default_rng(1).uniform(0, 255, (5, size, size, 3)).astype(np.float32)
    x[0] = 0.0
    x[1] = 255.0
    chains = [
        lucid_transforms(size),
        (Warp((Jitter(4), CropTo(size))),),
        (Warp((RandomScale(), CropTo(size))),),
        (Warp((RandomRotate(), CropTo(size))),),
        (Warp((Pad(12), CropTo(size))),),
    ]
    for tr in chains:
        out = ops.convert_to_numpy(apply_transforms(tr, ops.convert_to_tensor(x),
                                                    ops.convert_to_tensor(_uniforms(tr, 5))))
        assert out.shape == x.shape, tr
        assert out.min() >= 0.0 and out.max() <= 255.0, tr


def test_identity_warps_are_exact_and_samples_draw_their_own() -> None:
    size = 20
    x = smooth_image(4, size)
    ident = (Warp((Pad(12), Jitter(8), CropTo(size))),)  # offset 4 of 8: back where it was
    out = ops.convert_to_numpy(apply_transforms(ident, ops.convert_to_tensor(x),
                                                ops.convert_to_tensor(np.full((4, 2), 0.5, np.float32))))
    np.testing.assert_allclose(out, x, atol=1e-4)
    # a one-pixel shift: sample i moves by its own offset, filling with the pad grey
    shift = (Warp((Pad(1), Jitter(2), CropTo(size))),)
    u = np.array([[0.0, 0.5], [0.5, 0.5], [0.99, 0.5], [0.5, 0.0]], np.float32)
    out = ops.convert_to_numpy(apply_transforms(shift, ops.convert_to_tensor(x), ops.convert_to_tensor(u)))
    np.testing.assert_allclose(out[1], x[1], atol=1e-4)
    np.testing.assert_allclose(out[0][:, 1:], x[0][:, :-1], atol=1e-4)  # content moved right
    np.testing.assert_allclose(out[0][:, 0], 127.5, atol=1e-4)
    np.testing.assert_allclose(out[2][:, :-1], x[2][:, 1:], atol=1e-4)  # moved left
    np.testing.assert_allclose(out[3][1:], x[3][:-1], atol=1e-4)  # moved down
    # Lucid's chain on one picture repeated: different draws, different results
    tr = lucid_transforms(size)
    same = np.repeat(x[:1], 4, axis=0)
    out = ops.convert_to_numpy(apply_transforms(tr, ops.convert_to_tensor(same),
                                                ops.convert_to_tensor(_uniforms(tr, 4))))
    assert min(np.abs(out[i] - out[j]).mean() for i in range(4) for j in range(i)) > 0.1


def test_uniforms_are_per_filter_and_prefix_stable() -> None:
    tr = lucid_transforms(32)
    a = draw_uniforms(tr, 5, 10, 0)
    assert a.shape == (10, n_random(tr)) == (10, 6)
    np.testing.assert_array_equal(a, draw_uniforms(tr, 5, 10, 0))
    np.testing.assert_array_equal(a[:4], draw_uniforms(tr, 5, 4, 0))  # step t sees the same draw
    assert not np.array_equal(a, draw_uniforms(tr, 6, 10, 0))
    assert not np.array_equal(a, draw_uniforms(tr, 5, 10, 1))
    assert (a >= 0).all() and (a < 1).all()


def test_adam_is_tf1_adam_ascending() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 5)).astype(np.float32)
    grads = [rng.normal(size=(2, 5)).astype(np.float32) for _ in range(4)]
    opt = Adam()
    tv, state = ops.convert_to_tensor(v), opt.init(ops.convert_to_tensor(v))
    m = s = np.zeros_like(v, np.float64)
    ref = v.astype(np.float64)
    for t, g in enumerate(grads):
        tv, state = opt.update(tv, ops.convert_to_tensor(g), state, t, 0.05)
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * g * g
        lr_t = 0.05 * np.sqrt(1 - 0.999 ** (t + 1)) / (1 - 0.9 ** (t + 1))
        ref = ref + lr_t * m / (np.sqrt(s) + 1e-8)
    np.testing.assert_allclose(ops.convert_to_numpy(tv), ref, rtol=1e-5, atol=1e-6)


# --- parameters and keys ----------------------------------------------------------------------


def test_styles_are_validated_and_defaulted() -> None:
    assert set(STYLES) == {"book", "lucid", "maco"}
    book = PatternParams()
    assert book == PatternParams(64, 40, 1.0, 0, "preactivation", "float32")
    assert book.style == "book" and book.steps == 40 and book.step_size == 1.0
    lucid = PatternParams(style="lucid")
    assert lucid.steps == 256 and lucid.step_size == 0.05
    assert PatternParams(style="lucid", steps=12, step_size=0.1).steps == 12
    with pytest.raises(ValueError, match="style"):
        PatternParams(style="deepdream")
    with pytest.raises(ValueError, match="style"):
        get_style("Book")


def test_styles_are_kept_apart_in_keys() -> None:
    book = PatternParams()
    assert book.slug() == "s64-n40-lr1-seed0-fbpreactivation"  # the keys made before styles
    assert PatternParams(precision="bfloat16").slug() == "s64-n40-lr1-seed0-fbpreactivation-bf16"
    lucid = PatternParams(style="lucid")
    assert lucid.slug() == "s64-n256-lr0.05-seed0-fbpreactivation-lucid"
    same_numbers = PatternParams(steps=40, step_size=1.0, style="lucid")
    assert same_numbers.slug() != book.slug() and same_numbers.slug().endswith("-lucid")
    assert PatternParams(style="lucid", precision="bfloat16").slug().endswith("-bf16-lucid")
    prefixes = {pattern_prefix("vgg16-hed", "w" * 12, "block3_conv1", p.slug())
                for p in (book, lucid, same_numbers)}
    assert len(prefixes) == 3


# --- the ascent -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["block1_conv1", "block3_conv1"])
def test_each_lucid_pattern_drives_its_own_filter(hed: LoadedModel, layer: str) -> None:
    filters = list(range(10))
    pats = filter_patterns(hed, layer, filters, LUCID)
    raw = np.stack([p.raw for p in pats])
    assert raw.shape == (10, 32, 32, 3) and raw.min() >= 0 and raw.max() <= 255
    assert all(p.image.dtype == np.uint8 and np.abs(p.image - p.raw).max() <= 0.5 for p in pats)
    act = activations(hed, layer, raw)[:, filters]  # act[i, j]: filter j on pattern i
    noise = activations(hed, layer, np.stack([start_image(f, 32, 0) for f in filters]))[:, filters]
    live = [i for i, p in enumerate(pats) if not p.dead]
    assert len(live) >= 8
    for i in live:
        others = np.mean([act[k, i] for k in range(len(filters)) if k != i])
        assert act[i, i] > 2 * noise[i, i] + 1.0, (layer, i, act[i, i], noise[i, i])
        assert act[i, i] > others, (layer, i, act[i, i], others)
        assert pats[i].final_activation == pytest.approx(act[i, i], rel=1e-3, abs=1e-3)
        assert pats[i].final_activation > pats[i].start_activation


def test_lucid_is_reproducible_and_independent_of_its_batch(hed: LoadedModel) -> None:
    p = PatternParams(size=32, steps=12, style="lucid")
    alone = filter_patterns(hed, "block2_conv1", [5], p)[0]
    again = filter_patterns(hed, "block2_conv1", [5], p)[0]
    np.testing.assert_array_equal(alone.raw, again.raw)
    batched = filter_patterns(hed, "block2_conv1", [1, 5, 9], p)[1]
    assert batched.filter == 5
    np.testing.assert_allclose(alone.raw, batched.raw, atol=0.05)
    other_seed = filter_patterns(hed, "block2_conv1", [5], PatternParams(size=32, steps=12, seed=1,
                                                                         style="lucid"))[0]
    assert np.abs(other_seed.raw - alone.raw).mean() > 1.0
    book = filter_patterns(hed, "block2_conv1", [5], PatternParams(size=32, steps=12))[0]
    assert np.abs(book.raw - alone.raw).mean() > 1.0


def test_lucid_dead_filters_are_detected_and_rescued(hed: LoadedModel) -> None:
    filters = list(range(16))
    pats = filter_patterns(hed, "block5_conv1", filters, PatternParams(size=32, steps=6, style="lucid"))
    dead = [p for p in pats if p.dead]
    assert dead, "block5_conv1 of vgg16-hed has filters that are silent on Lucid's grey start"
    for p in dead:
        assert p.start_activation == 0.0 and p.fallback_used
    plain = filter_patterns(hed, "block5_conv1", [p.filter for p in dead],
                            PatternParams(size=32, steps=6, style="lucid", fallback="none"))
    for p in plain:
        # still dead by the definition (the untransformed start); unlike the book's, the pattern
        # may move anyway: a transformed start (grey border, shifted noise) can wake the filter
        assert p.dead and not p.fallback_used and p.start_activation == 0.0
