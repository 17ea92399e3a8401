"""JAX: a Keras model's weights as arguments of a compiled function, not constants inside it.

``jax.jit`` bakes closed-over arrays into the program, so a network called inside a compiled
function would carry its weights as constants (a large program, slow to compile, and a
persistent-cache entry per set of weights). ``model.stateless_call`` and Keras's
``StatelessScope`` (what ``stateless_call`` uses inside) instead read every variable from a
mapping, so the weights travel as arguments. The ascent's ``features`` is a closure over Keras
layers rather than one model: :func:`closure_variables` finds the variables it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def _walk(obj: Any, seen: set[int], depth: int) -> Iterator[Any]:
    import keras

    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, keras.Variable):
        yield obj
    elif isinstance(obj, keras.layers.Layer):
        yield from obj.variables
    elif callable(obj) and getattr(obj, "__closure__", None):
        for cell in obj.__closure__:
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            yield from _walk(content, seen, depth + 1)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _walk(item, seen, depth + 1)


def closure_variables(*fns: Callable[..., Any]) -> list[Any]:
    """Every Keras variable that ``fns`` reach through their closures (layers, models, nested
    functions), each once, in a stable order."""
    seen: set[int] = set()
    out: dict[int, Any] = {}
    for fn in fns:
        for v in _walk(fn, seen, 0):
            out.setdefault(id(v), v)
    return list(out.values())


def current_values(variables: Sequence[Any]) -> list[Any]:
    """The variables' values now (read at each call, so weights loaded later are used)."""
    return [v.value for v in variables]


@contextmanager
def bound(variables: Sequence[Any], values: Sequence[Any]) -> Iterator[None]:
    """Inside: each variable reads its value from ``values`` (traced arguments)."""
    import keras

    with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
        yield
