"""The CAM family: each batched method equals a plain one-image reference written from its paper's
formula (GradientTape + NumPy, float64), to 1e-4 after normalisation, on EfficientNet-Lite0 and on
a small seeded random-weight VGG-like network; Layer-CAM also at shallower layers. Plus the
registry's validation and the engine's sharing of passes."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from convatlas.shared.engine.cam_runner import cams, grad_cam, model_input
from convatlas.shared.engine.cams import METHODS, check_methods, get_methods, method_slug
from convatlas.shared.images.decode import load_image
from convatlas.shared.models.registry import LoadedModel, get_model
from convatlas.shared.samples import sample_photos

ALL = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam")
ATOL = 1e-4
F32_KERNELS = 1e-2  # engine vs float64: float32 kernels (see taped_compiled)


# --- references, one image at a time, written from the papers --------------------------------


_F64: dict[int, keras.Model] = {}


def float64(model: keras.Model) -> keras.Model:
    """The same network computing in float64: the references' tape runs there.

    (Eager float32 gradients are not a good enough reference: at EfficientNet-Lite0's block3b_add
    they are 4e-3 (relative) off the float64 ones, while the compiled float32 pass is 7e-7 off.)
    """
    if id(model) not in _F64:

        def as64(layer: keras.layers.Layer) -> keras.layers.Layer:
            config = layer.get_config()
            config["dtype"] = "float64"
            return layer.__class__.from_config(config)

        clone = keras.models.clone_model(model, clone_function=as64)
        clone.set_weights(model.get_weights())
        _F64[id(model)] = clone
    return _F64[id(model)]


def taped(model: keras.Model, layer: str, x: np.ndarray, cls: int | None):  # noqa: ANN201
    """(activations A (h,w,C), gradients dS/dA, class) for one preprocessed image, in float64."""
    model = float64(model)
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    with tf.GradientTape() as tape:
        conv, logits = grad_model(tf.constant(x[None], tf.float64))
        c = int(tf.argmax(logits[0])) if cls is None else cls
        score = logits[0, c]
    grads = tape.gradient(score, conv)
    return conv[0].numpy().astype(np.float64), grads[0].numpy().astype(np.float64), c


_COMPILED: dict[tuple[int, str], object] = {}


def taped_compiled(model: keras.Model, layer: str, x: np.ndarray, c: int):  # noqa: ANN201
    """(A, dS/dA) for one image from a plain compiled float32 tape (not the engine's code).

    Which float32 path is exact depends on the CPU's oneDNN kernels: on one machine eager
    float32 gradients were 4e-3 off the float64 ones at EfficientNet-Lite0's block3b_add while
    compiled ones were 7e-7 off; on an AMD EPYC (Zen 4) it is the other way round, compiled
    float32 is 3e-3 off at block5c_add (exact with TF_ENABLE_ONEDNN_OPTS=0). The formula
    check therefore compares the engine with a compiled float32 tape of the same precision,
    and with float64 at the float32 kernels' accuracy."""
    key = (id(model), layer)
    if key not in _COMPILED:
        grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])

        @tf.function
        def tape_fn(xx, cc):  # noqa: ANN001, ANN202
            with tf.GradientTape() as tape:
                conv, logits = grad_model(xx, training=False)
                score = tf.gather(logits[0], cc)
            return conv, tape.gradient(score, conv)

        _COMPILED[key] = tape_fn
    conv, grads = _COMPILED[key](tf.constant(x[None], tf.float32), tf.constant(c))  # type: ignore[operator]
    return conv[0].numpy().astype(np.float64), grads[0].numpy().astype(np.float64)


def norm(cam: np.ndarray) -> np.ndarray:
    cam = np.maximum(cam, 0)
    return cam / cam.max() if cam.max() > 0 else cam


def ref_gradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return norm(a @ g.mean(axis=(0, 1)))  # Selvaraju eq. 1–2


def ref_gradcam_pp(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Chattopadhay eq. 19 with Y = exp(S): alpha = g² / (2g² + Σ_ab A_ab g³), w = Σ alpha relu(g)
    denom = 2 * g**2 + a.sum(axis=(0, 1)) * g**3
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(g != 0, g**2 / denom, 0.0)
    return norm(a @ (alpha * np.maximum(g, 0)).sum(axis=(0, 1)))


def ref_xgradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    total = a.sum(axis=(0, 1))  # Fu eq. 11: w_k = Σ (A_k / Σ A_k) g_k
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(total != 0, (a * g).sum(axis=(0, 1)) / total, 0.0)
    return norm(a @ w)


def ref_hirescam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return norm((a * g).sum(axis=-1))  # Draelos & Carin: Σ_k g_k ⊙ A_k


def ref_layercam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return norm((np.maximum(g, 0) * a).sum(axis=-1))  # Jiang eq. 5–6


def ref_eigencam(a: np.ndarray) -> np.ndarray:
    h, w, c = a.shape
    x = a.reshape(h * w, c)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    v = vt[0] if vt[0].sum() >= 0 else -vt[0]  # the documented sign: Σ_c v_c ≥ 0
    return norm((x @ v).reshape(h, w))


def ref_scorecam(model: keras.Model, layer: str, x: np.ndarray, cls: int, channels) -> np.ndarray:  # noqa: ANN001
    """Wang Algorithm 1: mask the (preprocessed) input by each upsampled, min-max scaled channel;
    weights = softmax over channels of the class logit on the masked inputs.

    Forward passes only, so float32 (eager float32 forwards agree with float64 to ~1e-6; a
    float64 EfficientNet is too slow for a unit test)."""
    grad_model = keras.Model(model.inputs, model.get_layer(layer).output)
    a = grad_model(tf.constant(x[None], tf.float32))[0].numpy()
    masked = []
    for k in channels:
        up = tf.image.resize(a[None, :, :, k : k + 1], x.shape[:2], method="bilinear")[0].numpy()
        m = (up - up.min()) / (up.max() - up.min() + 1e-8)
        masked.append(x * m)
    s = np.asarray(model(tf.constant(np.stack(masked), tf.float32))[:, cls], np.float64)
    w = np.exp(s - s.max())
    w /= w.sum()
    return norm(a[:, :, channels].astype(np.float64) @ w)


GRADIENT_REFS = {
    "gradcam": ref_gradcam,
    "gradcam++": ref_gradcam_pp,
    "xgradcam": ref_xgradcam,
    "hirescam": ref_hirescam,
    "layercam": ref_layercam,
}


def check_against_references(
    lm: LoadedModel, images: list[np.ndarray], classes: list[int | None], layer: str,
    methods: tuple[str, ...], scorecam_channels: int | None = None,
) -> dict[str, list[float]]:
    """Engine vs references; returns the peaks per method (to check the maps are not trivial)."""
    got = cams(lm, images, classes, layer, methods, batch_size=len(images),
               scorecam_channels=scorecam_channels, pass_batch=8)
    peaks: dict[str, list[float]] = {m: [] for m in methods}
    for img, cls, per in zip(images, classes, got, strict=True):
        x = np.asarray(lm.preprocess(model_input(lm, img)), np.float32)
        a, g, c = taped(lm.model, layer, x, cls)
        for name in methods:
            cam = per[name]
            assert cam.class_index == c and cam.method == name and cam.layer == layer
            if name in GRADIENT_REFS:
                ref = GRADIENT_REFS[name](a, g)
                np.testing.assert_allclose(cam.heatmap, ref, atol=F32_KERNELS,
                                           err_msg=f"{name} at {layer} vs float64")
                ref = GRADIENT_REFS[name](*taped_compiled(lm.model, layer, x, c))
            elif name == "eigencam":
                ref = ref_eigencam(a)
            else:
                means = a.mean(axis=(0, 1))
                k = a.shape[-1] if scorecam_channels is None else scorecam_channels
                top = np.sort(np.argsort(-means, kind="stable")[:k])
                ref = ref_scorecam(lm.model, layer, x, c, top)
                assert cam.details["forward_passes"] == len(top)
            assert cam.heatmap.shape == ref.shape == a.shape[:2]
            np.testing.assert_allclose(cam.heatmap, ref, atol=ATOL, err_msg=f"{name} at {layer}")
            peaks[name].append(cam.peak)
    return peaks


# --- models -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def effnet() -> LoadedModel:
    return get_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [load_image(p) for p in sample_photos()]


@pytest.fixture(scope="module")
def vgg(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A small VGG-like classifier with seeded random weights (48 px, 10 classes), via a file."""
    keras.utils.set_random_seed(7)
    layers = keras.layers
    inputs = keras.Input((48, 48, 3))
    x = inputs
    for i, width in enumerate((8, 16, 16)):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{i + 1}_conv1")(x)
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{i + 1}_conv2")(x)
        x = layers.MaxPooling2D(name=f"block{i + 1}_pool")(x) if i < 2 else x
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    outputs = layers.Dense(10)(x)
    path = Path(tmp_path_factory.mktemp("vgg")) / "tiny_vgg.keras"
    keras.Model(inputs, outputs).save(path)
    return get_model(f"{path}#tf")


# --- definitions --------------------------------------------------------------------------------


def test_effnet_every_method_matches_its_reference(effnet, photos) -> None:  # noqa: ANN001
    peaks = check_against_references(effnet, photos[:2], [None, 967], "top_activation", ALL,
                                     scorecam_channels=8)
    assert all(p > 0 for ps in peaks.values() for p in ps), peaks


def test_effnet_layercam_at_shallower_layers(effnet, photos) -> None:  # noqa: ANN001
    for layer, side in (("block5c_add", 14), ("block3b_add", 28)):
        assert effnet.model.get_layer(layer).output.shape[1:3] == (side, side)
        check_against_references(effnet, photos[:1], [281], layer, ("layercam",))


def test_vgg_every_method_matches_its_reference(vgg, photos) -> None:  # noqa: ANN001
    # the last conv layer (12×12×16, before a Flatten: gradients vary over positions, so the
    # methods really differ) with every channel for Score-CAM, then the first block for Layer-CAM
    peaks = check_against_references(vgg, photos, [None, 3, None, 8], "block3_conv2", ALL)
    assert sum(p > 0 for p in peaks["gradcam"]) >= 2, peaks
    check_against_references(vgg, photos[:2], [None, 3], "block1_conv2", ("layercam", "gradcam"))


def test_vgg_methods_really_differ(vgg, photos) -> None:  # noqa: ANN001
    per = cams(vgg, photos[:1], None, "block3_conv2", ALL)[0]
    maps = {k: c.heatmap for k, c in per.items()}
    assert not np.allclose(maps["gradcam"], maps["hirescam"], atol=1e-3)
    assert not np.allclose(maps["gradcam"], maps["layercam"], atol=1e-3)


# --- the engine ---------------------------------------------------------------------------------


def test_default_is_todays_grad_cam(effnet, photos) -> None:  # noqa: ANN001
    old = grad_cam(effnet, photos[:3], [None, 281, None], batch_size=2)
    new = cams(effnet, photos[:3], [None, 281, None], batch_size=2)
    for a, b in zip(old, new, strict=True):
        assert list(b) == ["gradcam"]
        np.testing.assert_array_equal(a.heatmap, b["gradcam"].heatmap)
        assert (a.peak, a.score, a.class_index) == (b["gradcam"].peak, b["gradcam"].score,
                                                     b["gradcam"].class_index)


def test_shared_pass_equals_separate_passes(vgg, photos) -> None:  # noqa: ANN001
    together = cams(vgg, photos, None, "block3_conv2", ALL, batch_size=3, pass_batch=5)
    for name in ALL:
        alone = cams(vgg, photos, None, "block3_conv2", (name,), batch_size=2, pass_batch=16)
        for t, a in zip(together, alone, strict=True):
            np.testing.assert_allclose(t[name].heatmap, a[name].heatmap, atol=1e-5, err_msg=name)
            assert list(a) == [name]


def test_scorecam_cap_drops_only_dead_channels_exactly(vgg, photos) -> None:  # noqa: ANN001
    lm, layer = vgg, "block3_conv2"
    x = np.asarray(lm.preprocess(model_input(lm, photos[0])), np.float32)
    a = keras.Model(lm.model.inputs, lm.model.get_layer(layer).output)(x[None])[0].numpy()
    alive = int((a.max(axis=(0, 1)) > 0).sum())
    assert 0 < alive
    full = cams(lm, photos[:1], None, layer, ("scorecam",), scorecam_channels=None)[0]["scorecam"]
    capped = cams(lm, photos[:1], None, layer, ("scorecam",), scorecam_channels=alive)[0]["scorecam"]
    assert capped.details == {"max_channels": alive, "forward_passes": alive}
    assert full.details["forward_passes"] == a.shape[-1]
    np.testing.assert_allclose(capped.heatmap, full.heatmap, atol=1e-5)


def test_check_methods() -> None:
    assert check_methods("gradcam, scorecam,gradcam") == ("gradcam", "scorecam")
    assert check_methods(["layercam"]) == ("layercam",)
    assert set(METHODS) == set(ALL)
    with pytest.raises(ValueError, match=r"'gradcamm'.*gradcam, gradcam\+\+, xgradcam"):
        check_methods("gradcam,gradcamm")
    with pytest.raises(ValueError, match="no CAM method"):
        check_methods("")
    assert method_slug("gradcam++") == "gradcampp"
    assert all(m.slug.isidentifier() for m in METHODS.values())
    (sc,) = get_methods("scorecam", scorecam_channels=None)
    assert sc.describe() == {"max_channels": None}
    with pytest.raises(ValueError, match="max_channels"):
        get_methods("scorecam", scorecam_channels=0)
