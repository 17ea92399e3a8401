"""JAX: the filter-pattern ascent as one compiled function (``jax.jit`` over ``lax.fori_loop``).

The sibling of ``tf_ascent``, reached only through ``convatlas.shared.engine.backend``; the
objective, the parametrisation, the transforms and the optimiser step are the same ``keras.ops``
code, except that the lucid warp is differentiated by TensorFlow's rule (``jax_warp``). Gradients
come from ``jax.grad`` with the network's weights bound as arguments (``jax_state.bound``, what
``model.stateless_call`` does inside), so the weights are not baked into the compiled program.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from convatlas.shared.engine.backend.jax_state import bound, closure_variables, current_values
from convatlas.shared.engine.backend.jax_warp import apply_transforms
from convatlas.shared.engine.objectives import objective
from convatlas.shared.engine.optimisers import Optimiser, RmsStep
from convatlas.shared.engine.param import Parametrisation
from convatlas.shared.engine.transforms import Transform


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

    Same interface and semantics as ``tf_ascent.build_ascent``: returns ``ascend(v0, filters,
    steps, step_size, fallback, uniforms) -> (x, dead, start, final)``. ``steps`` may vary
    between calls without recompiling (the loop's bound is an argument); a new batch or image
    size compiles once more. With ``alpha`` it also returns MaCo's transparency map (the summed
    |∂objective/∂pixels| before the transforms, averaged over colours): the gradient is taken
    with respect to the pixels and pulled back through ``to_pixels`` (``jax.vjp``).
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    to_pixels = parametrisation.to_pixels if parametrisation is not None else _identity
    step = optimiser if optimiser is not None else RmsStep()
    transforms = tuple(transforms)
    variables = closure_variables(features, preprocess)

    def objectives(v: Any, filters: Any, use_pre: Any, u: Any) -> tuple[Any, Any]:
        x = to_pixels(v)
        if u is not None:
            x = apply_transforms(transforms, x, u)
        pre, post = features(preprocess(x), filters)  # float32 at any model precision
        return objective(pre, post, use_pre), objective(pre, post, jnp.zeros_like(use_pre))

    def total(v: Any, filters: Any, use_pre: Any, u: Any, values: Any) -> tuple[Any, Any]:
        with bound(variables, values):
            obj, post_obj = objectives(v, filters, use_pre, u)
        return jnp.sum(obj), post_obj

    grad = jax.grad(total, has_aux=True)

    def total_of_pixels(pixels: Any, filters: Any, use_pre: Any, u: Any, values: Any) -> Any:
        with bound(variables, values):
            x = apply_transforms(transforms, pixels, u) if u is not None else pixels
            pre, post = features(preprocess(x), filters)
            return jnp.sum(objective(pre, post, use_pre))

    grad_pixels = jax.grad(total_of_pixels)

    @jax.jit
    def compiled(v: Any, filters: Any, steps: Any, step_size: Any, fallback: Any, uniforms: Any,
                 values: Any) -> Any:
        no_pre = jnp.zeros(filters.shape, dtype=bool)
        g0, start = grad(v, filters, no_pre, None, values)
        dead = jnp.max(jnp.abs(g0), axis=tuple(range(1, v.ndim))) == 0.0
        use_pre = jnp.logical_and(dead, fallback)

        def body(t: Any, carry: Any) -> Any:
            v, state, acc = carry
            u = uniforms[:, t] if transforms else None
            if alpha:
                pixels, pull_back = jax.vjp(to_pixels, v)
                g_pixels = grad_pixels(pixels, filters, use_pre, u, values)
                (g,) = pull_back(g_pixels)
                acc = acc + jnp.mean(jnp.abs(g_pixels), axis=-1)
            else:
                g, _ = grad(v, filters, use_pre, u, values)
            v, state = step.update(v, g, state, t, step_size)
            return v, state, acc

        x0 = to_pixels(v)
        acc0 = jnp.zeros(x0.shape[:3], x0.dtype) if alpha else jnp.zeros(())
        v, _, acc = lax.fori_loop(0, steps, body, (v, step.init(v), acc0))
        with bound(variables, values):
            x = to_pixels(v)
            _, final = objectives(v, filters, no_pre, None)  # the result: forward only
        return (x, dead, start, final, acc) if alpha else (x, dead, start, final)

    def ascend(v: Any, filters: Any, steps: Any, step_size: Any, fallback: Any, uniforms: Any) -> Any:
        return compiled(v, filters, steps, step_size, fallback, uniforms,
                        current_values(variables))

    return ascend
