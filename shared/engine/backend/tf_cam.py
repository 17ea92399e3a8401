"""TensorFlow: the compiled passes of the CAM family.

- ``build_cam_pass``: ONE forward (+ backward, when a gradient method is asked) pass for a batch,
  applying every requested gradient and activation method to the same activations/gradients.
- ``build_scored_passes``: batched forward passes of perturbed inputs, for perturbation methods
  (Score-CAM) and the faithfulness metrics.
- ``jit``: a ``keras.ops`` function compiled by XLA (ROAD's imputation loop).

Reached only through ``convatlas.shared.engine.backend``; the CAM arithmetic is ``keras.ops``
(``heatmap``, ``cams``), so a JAX sibling reuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from convatlas.shared.engine.heatmap import method_outputs, select_scores
from convatlas.shared.tf_env import import_tf


def build_cam_pass(
    grad_model: Any,
    preprocess: Callable[[Any], Any],
    gradient_methods: Sequence[Any] = (),
    activation_methods: Sequence[Any] = (),
    return_features: bool = False,
) -> Callable[..., Any]:
    """Compile one pass for a batch: ``(x, class_index) → dict``.

    ``grad_model`` maps the input to (target feature map, class scores). The dict holds, per
    method name, ``(heat, peak)`` (normalised maps and their pre-normalisation maxima), plus
    ``logits``, ``chosen`` (the class used per image) and, with ``return_features``, ``features``
    (float32 activations, for perturbation methods). Without gradient methods no tape is
    recorded (a forward-only pass).
    """
    tf = import_tf()
    gradient_methods = tuple(gradient_methods)
    activation_methods = tuple(activation_methods)

    @tf.function(reduce_retracing=True)
    def cam_pass(x: Any, class_index: Any) -> Any:
        if gradient_methods:
            with tf.GradientTape() as tape:
                features, logits = grad_model(preprocess(x), training=False)
                logits = tf.cast(logits, tf.float32)  # a bfloat16 model's scores, as float32
                score, chosen = select_scores(logits, class_index)
                total = tf.reduce_sum(score)
            grads = tf.cast(tape.gradient(total, features), tf.float32)
        else:
            features, logits = grad_model(preprocess(x), training=False)
            logits = tf.cast(logits, tf.float32)
            _, chosen = select_scores(logits, class_index)
            grads = None  # forward only
        feats = tf.cast(features, tf.float32)
        return method_outputs(logits, chosen, feats, grads, gradient_methods,
                              activation_methods, return_features)

    return cam_pass


def build_scored_passes(
    model: Any,
    preprocess: Callable[[Any], Any],
    perturb: Callable[[Any, tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]], Any],
) -> Callable[..., Any]:
    """Compile a chunk of perturbed forward passes: ``(images, per_image, image, per_pass, cls,
    shared)``.

    ``images`` (N,H,W,3) pixels and ``per_image`` arrays (first axis N) are one batch's; a chunk
    of B passes names its image per pass (``image``, (B,) int32), its own ``per_pass`` arrays
    (first axis B) and the class scored (``cls``, (B,)); ``shared`` arrays go to every pass whole.
    Inside: the pass's image is gathered and preprocessed,
    ``perturb(x, per_image_gathered, per_pass, shared)`` gives the network's input, and the
    pass returns ``(logit, probability)`` of the class, each (B,) float32 (softmax over the
    model's outputs).
    """
    tf = import_tf()

    @tf.function(reduce_retracing=True)
    def passes(images: Any, per_image: Any, image: Any, per_pass: Any, cls: Any,
               shared: Any) -> Any:
        x = preprocess(tf.gather(images, image))
        gathered = tuple(tf.gather(a, image) for a in per_image)
        inputs = perturb(x, gathered, tuple(per_pass), tuple(shared))
        logits = tf.cast(model(inputs, training=False), tf.float32)
        idx = tf.expand_dims(tf.cast(cls, tf.int32), 1)
        logit = tf.gather(logits, idx, batch_dims=1)[:, 0]
        prob = tf.gather(tf.nn.softmax(logits, axis=-1), idx, batch_dims=1)[:, 0]
        return logit, prob

    return passes


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (``keras.ops`` code) compiled whole with XLA, callable inside the passes above."""
    tf = import_tf()
    return tf.function(fn, jit_compile=True, reduce_retracing=True)
