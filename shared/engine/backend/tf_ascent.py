"""TensorFlow: the filter-pattern ascent as one compiled loop (``tf.function`` + ``GradientTape``).

Reached only through ``convatlas.shared.engine.backend``; the objective, the parametrisation, the
transforms and the optimiser step are ``keras.ops`` (``objectives``, ``param``, ``transforms``,
``optimisers``), so a JAX sibling reuses them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from convatlas.shared.engine.objectives import objective
from convatlas.shared.engine.optimisers import Optimiser, RmsStep
from convatlas.shared.engine.param import Parametrisation
from convatlas.shared.engine.transforms import Transform, apply_transforms
from convatlas.shared.tf_env import import_tf


def _identity(v: Any) -> Any:
    return v


def build_ascent(
    features: Callable[[Any, Any], tuple[Any, Any]],
    preprocess: Callable[[Any], Any],
    parametrisation: Parametrisation | None = None,
    transforms: Sequence[Transform] = (),
    optimiser: Optimiser | None = None,
    alpha: bool = False,
) -> Callable[..., Any]:
    """Compile the whole gradient-ascent loop for one (model, layer[, style and size]).

    ``features(x, filters)`` gives each sample's own channel before and after the activation
    (``objectives.selected_channels``). The variable becomes pixels by
    ``parametrisation.to_pixels`` (default: the variable is the pixels), goes through
    ``transforms`` (default none) and the model's ``preprocess``; ``optimiser`` moves it (default
    the book's RMS-normalised step). The defaults are the book's loop, op for op.

    Returns ``ascend(v0, filters, steps, step_size, fallback, uniforms) -> (x, dead, start,
    final)``: ``uniforms`` (N, ≥ steps, n_random(transforms)) feed the transforms at each step;
    ``x`` are the final pixels; ``dead`` marks filters whose activation objective has zero
    gradient on the untransformed start image (they are optimised on the pre-activation when
    ``fallback`` is true); ``start``/``final`` are the activation objective on the untransformed
    image before and after. With ``alpha`` it also returns ``alpha`` (N, H, W): the sum over the
    steps of |∂objective/∂pixels| (the pixels before the transforms), averaged over the colour
    channels: MaCo's transparency map.
    """
    tf = import_tf()
    to_pixels = parametrisation.to_pixels if parametrisation is not None else _identity
    step = optimiser if optimiser is not None else RmsStep()
    transforms = tuple(transforms)

    def value_and_grad(v: Any, filters: Any, use_pre: Any, u: Any) -> tuple[Any, Any, Any, Any]:
        with tf.GradientTape() as tape:
            tape.watch(v)
            pixels = to_pixels(v)
            x = apply_transforms(transforms, pixels, u) if u is not None else pixels
            pre, post = features(preprocess(x), filters)  # float32 at any model precision
            obj = objective(pre, post, use_pre)
            total = tf.reduce_sum(obj)
        post_obj = objective(pre, post, tf.zeros_like(use_pre))
        if not alpha:
            return obj, post_obj, tape.gradient(total, v), None
        g, g_pixels = tape.gradient(total, [v, pixels])
        return obj, post_obj, g, tf.reduce_mean(tf.abs(g_pixels), axis=-1)

    @tf.function(reduce_retracing=True)
    def ascend(v: Any, filters: Any, steps: Any, step_size: Any, fallback: Any, uniforms: Any) -> Any:
        no_pre = tf.zeros(tf.shape(filters), dtype=tf.bool)
        _, start, g0, _ = value_and_grad(v, filters, no_pre, None)
        dead = tf.reduce_max(tf.abs(g0), axis=list(range(1, len(v.shape)))) == 0.0
        use_pre = tf.logical_and(dead, fallback)
        state = step.init(v)
        x = to_pixels(v)
        acc = tf.zeros(tf.shape(x)[:3]) if alpha else tf.zeros(())
        for t in tf.range(steps):
            u = uniforms[:, t] if transforms else None
            _, _, g, g_pixels = value_and_grad(v, filters, use_pre, u)
            if alpha:
                acc += g_pixels
            v, state = step.update(v, g, state, t, step_size)
        x = to_pixels(v)
        pre, post = features(preprocess(x), filters)  # the result: forward only
        final = objective(pre, post, no_pre)
        return (x, dead, start, final, acc) if alpha else (x, dead, start, final)

    return ascend
