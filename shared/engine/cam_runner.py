"""The CAM family (DLwP §5.4.3's Grad-CAM and its successors), batched.

``grad_cam`` is today's engine: class score → gradients at the target conv layer → channel weights
(spatial mean) → weighted sum → ReLU → divide by max, one forward + backward pass for many images.
``cams`` runs any set of methods from ``convatlas.shared.engine.cams`` on the same batches:

- the gradient methods (``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``, ``layercam``)
  share ONE compiled forward + backward pass per batch; each adds only its arithmetic;
- ``eigencam`` uses the activations of that pass, or a forward-only pass when no gradient method
  is asked;
- ``scorecam`` adds its masked forward passes, batched ``pass_batch`` at a time across the batch's
  photos (see ``cams/scorecam.py`` for the cost and the channel cap).

Scores are pre-softmax logits for the built-in classifiers. Every map is ReLU'd and divided by
its maximum; an all-zero map stays zero and is flagged ``empty``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from convatlas.shared.engine.cams import (
    ACTIVATION,
    DEFAULT,
    DEFAULT_MAX_CHANNELS,
    GRADIENT,
    PERTURBATION,
    CamMethod,
    PerturbationMethod,
    get_methods,
)
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
    method: str = "gradcam"
    details: dict[str, Any] = field(default_factory=dict)  # method settings, extra passes


def target_layer(lm: LoadedModel, layer: str | None) -> str:
    return layer or last_conv_layer(lm.model)


def _grad_model(lm: LoadedModel, layer: str, precision: str) -> Any:
    import keras

    model = lm.at_precision(precision)
    return keras.Model(model.inputs, [model.get_layer(layer).output, model.output])


def _cam_pass_fn(
    lm: LoadedModel,
    layer: str,
    precision: str,
    gradient: tuple[CamMethod, ...],
    activation: tuple[CamMethod, ...],
    features: bool,
) -> Callable[..., Any]:
    key = ("cams", layer, precision, gradient, activation, features)
    if key not in lm.compiled:
        from convatlas.shared.engine.backend import cam_builders

        build = cam_builders().build_cam_pass
        lm.compiled[key] = build(
            _grad_model(lm, layer, precision), lm.preprocess, gradient, activation, features
        )
    return lm.compiled[key]


def _passes_fn(
    lm: LoadedModel, key: Any, perturb: Callable[..., Any], precision: str
) -> Callable[..., Any]:
    full = ("passes", key, precision)
    if full not in lm.compiled:
        from convatlas.shared.engine.backend import cam_builders

        build = cam_builders().build_scored_passes
        lm.compiled[full] = build(lm.at_precision(precision), lm.preprocess, perturb)
    return lm.compiled[full]


def scored_passes(
    lm: LoadedModel,
    key: Any,
    perturb: Callable[[Any, tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]], Any],
    images: np.ndarray,
    classes: np.ndarray,
    image: np.ndarray,
    per_image: tuple[np.ndarray, ...] = (),
    per_pass: tuple[np.ndarray, ...] = (),
    shared: tuple[np.ndarray, ...] = (),
    pass_batch: int = 16,
    precision: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Forward passes of perturbed inputs, ``pass_batch`` at a time: (logits, probabilities).

    ``images`` (N,H,W,3) float32 pixels at the model's input size and ``per_image`` arrays
    (first axis N) belong to one batch of photos; pass ``p`` perturbs image ``image[p]`` with
    ``perturb(x, per_image[image[p]], per_pass[p], shared)`` (``x`` preprocessed, in
    ``keras.ops``; ``shared`` arrays are the same for every pass) and scores class
    ``classes[image[p]]``. ``key`` names ``perturb`` for the compiled-pass cache
    (one compiled pass per key and precision on the model). Returns (P,) float32 arrays: the
    class's logit and its softmax probability per pass.
    """
    from convatlas.shared.engine.backend import constant, to_numpy

    fn = _passes_fn(lm, key, perturb, check_precision(precision))
    images_t = constant(np.asarray(images, np.float32))
    per_image_t = tuple(constant(a) for a in per_image)
    shared_t = tuple(constant(a) for a in shared)
    cls = np.asarray(classes, np.int32)[np.asarray(image)]
    logits: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    for i in range(0, len(image), pass_batch):
        sl = slice(i, i + pass_batch)
        chunk = tuple(constant(a[sl]) for a in per_pass)
        lg, pr = fn(images_t, per_image_t, constant(image[sl].astype(np.int32)), chunk,
                    constant(cls[sl]), shared_t)
        logits.append(to_numpy(lg))
        probs.append(to_numpy(pr))
    if not logits:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(logits), np.concatenate(probs)


def _perturbation_cam(
    lm: LoadedModel,
    method: PerturbationMethod,
    x: np.ndarray,
    features: np.ndarray,
    chosen: np.ndarray,
    pass_batch: int,
    precision: str,
) -> tuple[np.ndarray, np.ndarray, int]:
    from convatlas.shared.engine.backend import to_numpy
    from convatlas.shared.engine.heatmap import normalise

    plan = method.plan(features)

    def perturb(xp: Any, _per_image: Any, per_pass: tuple[Any, ...], _shared: Any) -> Any:
        return method.perturb(xp, per_pass)

    scores, _ = scored_passes(lm, method, perturb, x, chosen, plan.image, (), plan.per_pass,
                              pass_batch=pass_batch, precision=precision)
    heat, peak = normalise(method.combine(features, plan, scores))
    return to_numpy(heat), to_numpy(peak), plan.passes // max(1, len(x))


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


def _predictions(probs: np.ndarray, top_k: int) -> list[Prediction]:
    classes = imagenet_classes()
    order = np.argsort(-probs)[:top_k]
    named = len(probs) == len(classes)
    return [
        Prediction(
            int(k),
            classes[k].wnid if named else "",
            classes[k].label if named else str(k),
            float(probs[k]),
        )
        for k in order
    ]


def cams(
    lm: LoadedModel,
    images: list[np.ndarray],
    class_indices: Sequence[int | None] | None = None,
    layer: str | None = None,
    methods: str | Sequence[str] = DEFAULT,
    batch_size: int = 16,
    top_k: int = 3,
    precision: str = "float32",
    scorecam_channels: int | None = DEFAULT_MAX_CHANNELS,
    pass_batch: int | None = None,
) -> list[dict[str, Cam]]:
    """Heatmaps of every requested method for RGB uint8 photos (any size), per photo.

    Returns one dict per photo, method name → :class:`Cam`, in the order the methods were asked
    for; all share the photo's class (``None`` = its top-1 prediction), score and predictions.
    ``methods`` is validated by ``cams.check_methods`` (a ``ValueError`` lists the valid names).
    ``scorecam_channels`` caps Score-CAM's channels per photo (``None``: all of them);
    ``pass_batch`` is the batch of its masked forward passes (default ``batch_size``).
    ``precision`` is that of the network passes; the map arithmetic is float32 either way.
    """
    if not lm.spec.can_gradcam:
        raise GradCamUnsupported(lm.spec.grad_cam_hint or f"{lm.name} has no classifier")
    from convatlas.shared.engine.backend import constant, to_numpy

    chosen_methods = get_methods(methods, scorecam_channels)
    precision = check_precision(precision)
    gradient = tuple(m for m in chosen_methods if m.kind == GRADIENT)
    activation = tuple(m for m in chosen_methods if m.kind == ACTIVATION)
    perturbation = tuple(m for m in chosen_methods if m.kind == PERTURBATION)
    layer = target_layer(lm, layer)
    fn = _cam_pass_fn(lm, layer, precision, gradient, activation, bool(perturbation))
    wanted = list(class_indices) if class_indices else [None] * len(images)
    out: list[dict[str, Cam]] = []
    for i in range(0, len(images), batch_size):
        x = np.stack([model_input(lm, im) for im in images[i : i + batch_size]])
        cls = np.array([-1 if c is None else c for c in wanted[i : i + batch_size]], np.int32)
        res = fn(constant(x), constant(cls))
        logits, chosen = to_numpy(res["logits"]), to_numpy(res["chosen"])
        maps: dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = {}
        for m in gradient + activation:
            heat, peak = (to_numpy(t) for t in res[m.name])
            maps[m.name] = (heat, peak, m.describe())
        if perturbation:
            features = to_numpy(res["features"])
            for m in perturbation:
                assert isinstance(m, PerturbationMethod)
                heat, peak, per_image = _perturbation_cam(
                    lm, m, x, features, chosen, pass_batch or batch_size, precision
                )
                maps[m.name] = (heat, peak, {**m.describe(), "forward_passes": per_image})
        probs = _softmax(logits.astype(np.float64))
        for j in range(len(x)):
            top = _predictions(probs[j], top_k)
            per_photo: dict[str, Cam] = {}
            for m in chosen_methods:
                heat, peak, details = maps[m.name]
                per_photo[m.name] = Cam(
                    heatmap=heat[j].astype(np.float32),
                    peak=float(peak[j]),
                    empty=bool(peak[j] <= 0),
                    class_index=int(chosen[j]),
                    score=float(logits[j, chosen[j]]),
                    top=top,
                    layer=layer,
                    method=m.name,
                    details=dict(details),
                )
            out.append(per_photo)
    return out


def grad_cam(
    lm: LoadedModel,
    images: list[np.ndarray],
    class_indices: list[int | None] | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    top_k: int = 3,
    precision: str = "float32",
) -> list[Cam]:
    """Grad-CAM heatmaps for RGB uint8 photos (any size); ``None`` class = the top-1 prediction.

    ``precision`` is that of the network pass (``convatlas.shared.engine.precision``); the heatmap
    arithmetic is float32 either way. The same as ``cams(..., methods=("gradcam",))``.
    """
    return [c["gradcam"] for c in cams(lm, images, class_indices, layer, DEFAULT, batch_size,
                                       top_k, precision)]
