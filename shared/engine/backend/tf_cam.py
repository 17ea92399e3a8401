"""TensorFlow: one compiled forward + backward pass for a batch of Grad-CAM inputs.

Reached only through ``convatlas.shared.engine.backend``; the CAM arithmetic is ``keras.ops``
(``heatmap``), so a JAX sibling reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convatlas.shared.engine.heatmap import cam_from_gradients, select_scores
from convatlas.shared.tf_env import import_tf


def build_gradcam(grad_model: Any, preprocess: Callable[[Any], Any]) -> Callable[..., Any]:
    """Compile one forward + backward pass for a batch: ``(x, class_index) → cams``.

    ``grad_model`` maps the input to (target feature map, class scores). Returns
    ``(heat, peak, logits, chosen)``: normalised heatmaps, their pre-normalisation maxima,
    the scores, and the class used per image.
    """
    tf = import_tf()

    @tf.function(reduce_retracing=True)
    def gradcam(x: Any, class_index: Any) -> Any:
        with tf.GradientTape() as tape:
            features, logits = grad_model(preprocess(x), training=False)
            logits = tf.cast(logits, tf.float32)  # a bfloat16 model's scores, as float32
            score, chosen = select_scores(logits, class_index)
            total = tf.reduce_sum(score)
        grads = tf.cast(tape.gradient(total, features), tf.float32)
        heat, peak = cam_from_gradients(tf.cast(features, tf.float32), grads)
        return heat, peak, logits, chosen

    return gradcam
