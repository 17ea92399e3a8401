"""Grad-CAM (DLwP §5.4.3), batched: one forward + backward pass for many images.

Class score → gradients at the target conv layer → channel weights (spatial mean) → weighted sum
→ ReLU → divide by max. Scores are pre-softmax logits for the built-in classifiers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from convatlas.shared.engine.precision import check_precision
from convatlas.shared.models.labels import imagenet_classes
from convatlas.shared.models.registry import LoadedModel, last_conv_layer


class GradCamUnsupported(ValueError):
    """The model cannot do Grad-CAM (no classifier)."""


@dataclass
class Prediction:
    index: int
    wnid: str
    label: str
    probability: float


@dataclass
class Cam:
    heatmap: np.ndarray  # h×w float32 in [0, 1] at the conv layer's resolution
    peak: float  # max of the ReLU'd map before normalisation
    empty: bool  # all-zero map: heatmap is zeros, flagged
    class_index: int
    score: float  # the differentiated value (a logit for built-ins)
    top: list[Prediction]
    layer: str


def target_layer(lm: LoadedModel, layer: str | None) -> str:
    return layer or last_conv_layer(lm.model)


def _gradcam_fn(lm: LoadedModel, layer: str, precision: str):  # noqa: ANN202
    key = ("gradcam", layer, precision)
    if key not in lm.compiled:
        import keras

        from convatlas.shared.engine.backend import build_gradcam

        model = lm.at_precision(precision)
        grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
        lm.compiled[key] = build_gradcam(grad_model, lm.preprocess)
    return lm.compiled[key]


def input_size(lm: LoadedModel) -> int:
    """The classifier's square input side: the spec's, else the model's own, else 224."""
    fixed = lm.model.inputs[0].shape[1]
    return lm.spec.input_size or (int(fixed) if fixed else 224)


def model_input(lm: LoadedModel, image: np.ndarray) -> np.ndarray:
    """Resize an RGB uint8 photo to the classifier's square input, as float32 pixels."""
    size = input_size(lm)
    interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def grad_cam(
    lm: LoadedModel,
    images: list[np.ndarray],
    class_indices: list[int | None] | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    top_k: int = 3,
    precision: str = "float32",
) -> list[Cam]:
    """Heatmaps for RGB uint8 photos (any size); ``None`` class = the top-1 prediction.

    ``precision`` is that of the network pass (``convatlas.shared.engine.precision``); the heatmap
    arithmetic is float32 either way.
    """
    if not lm.spec.can_gradcam:
        raise GradCamUnsupported(lm.spec.grad_cam_hint or f"{lm.name} has no classifier")
    from convatlas.shared.engine.backend import constant, to_numpy

    layer = target_layer(lm, layer)
    fn = _gradcam_fn(lm, layer, check_precision(precision))
    classes = imagenet_classes()
    wanted = class_indices or [None] * len(images)
    out: list[Cam] = []
    for i in range(0, len(images), batch_size):
        x = np.stack([model_input(lm, im) for im in images[i : i + batch_size]])
        cls = np.array([-1 if c is None else c for c in wanted[i : i + batch_size]], np.int32)
        heat, peak, logits, chosen = (to_numpy(t) for t in fn(constant(x), constant(cls)))
        probs = _softmax(logits.astype(np.float64))
        for j in range(len(x)):
            order = np.argsort(-probs[j])[:top_k]
            top = [
                Prediction(
                    int(k),
                    classes[k].wnid if len(probs[j]) == len(classes) else "",
                    classes[k].label if len(probs[j]) == len(classes) else str(k),
                    float(probs[j, k]),
                )
                for k in order
            ]
            out.append(
                Cam(
                    heatmap=heat[j].astype(np.float32),
                    peak=float(peak[j]),
                    empty=bool(peak[j] <= 0),
                    class_index=int(chosen[j]),
                    score=float(logits[j, chosen[j]]),
                    top=top,
                    layer=layer,
                )
            )
    return out
