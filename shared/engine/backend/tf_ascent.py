"""TensorFlow: the filter-pattern ascent as one compiled loop (``tf.function`` + ``GradientTape``).

Reached only through ``convatlas.shared.engine.backend``; the objective and the normalisation are
``keras.ops`` (``objectives``), so a JAX sibling reuses them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convatlas.shared.engine.objectives import objective, rms_normalize
from convatlas.shared.tf_env import import_tf


def build_ascent(
    features: Callable[[Any, Any], tuple[Any, Any]], preprocess: Callable[[Any], Any]
) -> Callable[..., Any]:
    """Compile the whole gradient-ascent loop for one (model, layer).

    ``features(x, filters)`` gives each sample's own channel before and after the activation
    (``objectives.selected_channels``).

    Returns ``ascend(x0, filters, steps, step_size, fallback) -> (x, dead, start, final)`` where
    ``dead`` marks filters whose activation objective has zero gradient on the start image
    (they are optimised on the pre-activation when ``fallback`` is true) and ``start``/``final``
    are the activation objective before and after.
    """
    tf = import_tf()

    def value_and_grad(x: Any, filters: Any, use_pre: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            pre, post = features(preprocess(x), filters)  # float32 at any model precision
            obj = objective(pre, post, use_pre)
            total = tf.reduce_sum(obj)
        post_obj = objective(pre, post, tf.zeros_like(use_pre))
        return obj, post_obj, tape.gradient(total, x)

    @tf.function(reduce_retracing=True)
    def ascend(x: Any, filters: Any, steps: Any, step_size: Any, fallback: Any) -> Any:
        no_pre = tf.zeros(tf.shape(filters), dtype=tf.bool)
        _, start, g0 = value_and_grad(x, filters, no_pre)
        dead = tf.reduce_max(tf.abs(g0), axis=[1, 2, 3]) == 0.0
        use_pre = tf.logical_and(dead, fallback)
        for _ in tf.range(steps):
            _, _, g = value_and_grad(x, filters, use_pre)
            x = x + rms_normalize(g) * step_size
        pre, post = features(preprocess(x), filters)  # the result: forward only
        final = objective(pre, post, no_pre)
        return x, dead, start, final

    return ascend
