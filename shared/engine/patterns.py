"""Filter patterns (DLwP §5.4.2), batched: many filters of one layer per model call.

Each sample of a batch is one filter's image; the objective and the gradient normalisation are
per sample, so the batch is just many independent copies of the book's loop run at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convatlas.shared.engine.objectives import deprocess, selected_channels, start_image
from convatlas.shared.engine.precision import check_precision, key_suffix
from convatlas.shared.models.registry import LoadedModel


@dataclass(frozen=True)
class PatternParams:
    size: int = 64
    steps: int = 40
    step_size: float = 1.0
    seed: int = 0
    fallback: str = "preactivation"  # for dead filters; or "none"
    precision: str = "float32"  # of the network passes; or "bfloat16" (convatlas.shared.engine.precision)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.size < 8 or self.size > 1024:
            raise ValueError(f"size must be 8..1024, got {self.size}")
        if self.steps < 0 or self.steps > 10_000:
            raise ValueError(f"steps must be 0..10000, got {self.steps}")
        if self.fallback not in ("preactivation", "none"):
            raise ValueError(f"fallback must be 'preactivation' or 'none', got {self.fallback!r}")

    def slug(self) -> str:
        """Stable text of every parameter that changes the result (used in result keys)."""
        return (
            f"s{self.size}-n{self.steps}-lr{self.step_size:g}-seed{self.seed}-fb{self.fallback}"
            f"{key_suffix(self.precision)}"
        )


@dataclass
class Pattern:
    filter: int
    image: np.ndarray  # size×size×3 uint8, deprocessed as in the book
    raw: np.ndarray  # size×size×3 float32, the optimised pixels (0–255 scale)
    dead: bool  # zero gradient on the start image
    fallback_used: bool  # optimised on the pre-activation instead
    start_activation: float
    final_activation: float


def _ascent_fn(lm: LoadedModel, layer: str, precision: str):  # noqa: ANN202
    key = ("ascent", layer, precision)
    if key not in lm.compiled:
        from convatlas.shared.engine.backend import build_ascent

        features = selected_channels(lm.any_size_model(precision), layer)
        lm.compiled[key] = build_ascent(features, lm.preprocess)
    return lm.compiled[key]


def filter_patterns(
    lm: LoadedModel,
    layer: str,
    filters: list[int],
    params: PatternParams = PatternParams(),
    batch_size: int = 64,
) -> list[Pattern]:
    """Optimise ``filters`` of ``layer`` in chunks of ``batch_size``; one compiled loop per chunk."""
    from convatlas.shared.engine.backend import constant, to_numpy

    ascend = _ascent_fn(lm, layer, params.precision)
    out: list[Pattern] = []
    for i in range(0, len(filters), batch_size):
        chunk = filters[i : i + batch_size]
        x0 = np.stack([start_image(f, params.size, params.seed) for f in chunk])
        x, dead, start, final = (to_numpy(t) for t in ascend(
            constant(x0),
            constant(chunk, "int32"),
            constant(params.steps, "int32"),
            constant(params.step_size, "float32"),
            constant(params.fallback == "preactivation"),
        ))
        for j, f in enumerate(chunk):
            out.append(
                Pattern(
                    filter=f,
                    image=deprocess(x[j]),
                    raw=x[j].astype(np.float32),
                    dead=bool(dead[j]),
                    fallback_used=bool(dead[j]) and params.fallback == "preactivation",
                    start_activation=float(start[j]),
                    final_activation=float(final[j]),
                )
            )
    return out
