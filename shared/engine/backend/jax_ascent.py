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
) -> Callable[..., Any]:
    """Compile the whole gradient-ascent loop for one (model, layer[, style and size]).

    Same interface and semantics as ``tf_ascent.build_ascent``: returns ``ascend(v0, filters,
    steps, step_size, fallback, uniforms) -> (x, dead, start, final)``. ``steps`` may vary
    between calls without recompiling (the loop's bound is an argument); a new batch or image
    size compiles once more.
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

    @jax.jit
    def compiled(v: Any, filters: Any, steps: Any, step_size: Any, fallback: Any, uniforms: Any,
                 values: Any) -> Any:
        no_pre = jnp.zeros(filters.shape, dtype=bool)
        g0, start = grad(v, filters, no_pre, None, values)
        dead = jnp.max(jnp.abs(g0), axis=tuple(range(1, v.ndim))) == 0.0
        use_pre = jnp.logical_and(dead, fallback)

        def body(t: Any, carry: Any) -> Any:
            v, state = carry
            u = uniforms[:, t] if transforms else None
            g, _ = grad(v, filters, use_pre, u, values)
            return step.update(v, g, state, t, step_size)

        v, _ = lax.fori_loop(0, steps, body, (v, step.init(v)))
        with bound(variables, values):
            x = to_pixels(v)
            _, final = objectives(v, filters, no_pre, None)  # the result: forward only
        return x, dead, start, final

    def ascend(v: Any, filters: Any, steps: Any, step_size: Any, fallback: Any, uniforms: Any) -> Any:
        return compiled(v, filters, steps, step_size, fallback, uniforms,
                        current_values(variables))

    return ascend
