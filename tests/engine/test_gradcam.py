"""Grad-CAM: the batched engine equals a plain one-image GradientTape implementation, is class
discriminative on real photos, never gives NaN, and overlays at the photo's size without overflow."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from convatlas.shared.engine.cam_runner import GradCamUnsupported, grad_cam, model_input
from convatlas.shared.engine.heatmap import cam_from_gradients
from convatlas.shared.images.decode import load_image
from convatlas.shared.models.labels import find_class, imagenet_classes
from convatlas.shared.models.registry import get_model
from convatlas.shared.render import colorize, overlay
from convatlas.shared.samples import sample_photos


@pytest.fixture(scope="module")
def effnet():  # noqa: ANN201
    return get_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {p.stem: load_image(p) for p in sample_photos()}


def reference_cam(model: keras.Model, x: np.ndarray, layer: str, class_index: int | None) -> np.ndarray:
    """keras-io's grad_cam.py, one image, eager, written independently of the engine."""
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    with tf.GradientTape() as tape:
        conv, preds = grad_model(x[None])
        idx = int(tf.argmax(preds[0])) if class_index is None else class_index
        channel = preds[:, idx]
    grads = tape.gradient(channel, conv)
    pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
    heat = conv[0] @ pooled[..., tf.newaxis]
    heat = tf.squeeze(heat)
    heat = tf.maximum(heat, 0) / tf.math.reduce_max(heat)
    return heat.numpy()


def test_batched_engine_matches_one_image_reference(effnet, photos) -> None:  # noqa: ANN001
    images = list(photos.values())
    classes = [None, 281, None, 967]
    cams = grad_cam(effnet, images, classes, batch_size=3)
    for img, cls, cam in zip(images, classes, cams, strict=True):
        x = effnet.preprocess(model_input(effnet, img))
        ref = reference_cam(effnet.model, np.asarray(x), "top_activation", cls)
        assert cam.heatmap.shape == ref.shape == (7, 7)
        np.testing.assert_allclose(cam.heatmap, ref, atol=1e-4)
        if cls is not None:
            assert cam.class_index == cls


def test_top1_and_predictions(effnet, photos) -> None:  # noqa: ANN001
    cams = grad_cam(effnet, [photos["chelsea"], photos["coffee"]])
    assert cams[0].top[0].label in {"tabby", "tiger cat", "Egyptian cat"}
    assert cams[1].top[0].label == "espresso"
    for cam in cams:
        assert len(cam.top) == 3 and cam.top[0].probability >= cam.top[1].probability
        assert cam.class_index == cam.top[0].index and cam.layer == "top_activation"


def _canvas(a: np.ndarray, b: np.ndarray, vertical: bool, size: int = 224) -> np.ndarray:
    a = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
    b = cv2.resize(b, (size, size), interpolation=cv2.INTER_AREA)
    return np.concatenate([a, b], axis=0 if vertical else 1)


def test_class_discriminative_on_composites(effnet, photos) -> None:  # noqa: ANN001
    cat = find_class("tabby", imagenet_classes()).index
    cup = find_class("espresso", imagenet_classes()).index
    placements = [(False, False), (False, True), (True, False), (True, True)]  # (vertical, cat first)
    hits = {"cat": 0, "cup": 0}
    for vertical, cat_first in placements:
        first, second = (photos["chelsea"], photos["coffee"]) if cat_first else (photos["coffee"], photos["chelsea"])
        canvas = _canvas(first, second, vertical)
        cams = grad_cam(effnet, [canvas, canvas], [cat, cup])
        for name, cam, on_first in (("cat", cams[0], cat_first), ("cup", cams[1], not cat_first)):
            h = cam.heatmap
            half = h.shape[0 if vertical else 1] // 2
            a = h[:half].sum() if vertical else h[:, :half].sum()
            b = h[-half:].sum() if vertical else h[:, -half:].sum()
            hits[name] += int((a > b) == on_first)
    assert hits["cat"] >= 3 and hits["cup"] >= 3, hits


def test_zero_map_is_zero_and_flagged() -> None:
    feats = np.random.default_rng(0).random((2, 7, 7, 8)).astype("float32")
    grads = np.zeros_like(feats)
    grads[1] = -1.0  # all weights negative → ReLU kills everything
    heat, peak = cam_from_gradients(feats, grads)
    heat = keras.ops.convert_to_numpy(heat)
    assert not np.isnan(heat).any()
    assert (heat == 0).all() and (keras.ops.convert_to_numpy(peak) == 0).all()


def test_overlay_is_clipped_and_at_original_size() -> None:
    img = np.full((50, 80, 3), 250, np.uint8)
    heat = np.ones((7, 7), np.float32)
    out = overlay(img, heat)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out >= img).all()  # the book's heatmap*0.4+img would wrap around to small values
    assert (out == 255).any()
    expected = np.clip(colorize(heat, 80, 50) * 0.4 + img.astype(np.float32), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_models_without_classifier_are_refused() -> None:
    with pytest.raises(GradCamUnsupported, match="efficientnet-lite0"):
        grad_cam(get_model("vgg16-hed"), [np.zeros((32, 32, 3), np.uint8)])
