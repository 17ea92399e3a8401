"""The faithfulness-metric seam: what a metric declares (its summary fields, its cost) and how
it is computed from perturbed forward passes.

Two kinds, by the passes they need:

- :class:`BlendMetric`: each pass blends the (preprocessed) input with a baseline through a
  per-pixel mask made from the heatmap (``keep·x + (1 − keep)·base``, :func:`blend`). Every
  blend metric asked for a batch shares ONE compiled program and one run of passes (the
  unperturbed pass included); a metric says which ``mode`` its passes use, the ``k`` of each
  (how many of the most salient pixels), its baseline, and how its passes' probabilities become
  its figures (``read``).
- :class:`PassesMetric`: a metric with a perturbation of its own (ROAD's imputation), which
  runs its own compiled passes for the batch (``compute``).

A metric also declares its per-photo summary fields (:class:`SummaryField`: the scalars averaged
over a run, and how the report names them) and, when it records a curve, the colour the gallery
draws it in. ``convatlas.shared.metrics_summary`` reads these; adding a metric is one small
module with a frozen dataclass subclassing one of the two kinds, listed in
``metrics/__init__.py``'s ``REGISTRY``.

Everything computed in the network's program is ``keras.ops``; the planning is NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from convatlas.shared.engine.metrics.protocol import Protocol

# the blend program's modes (one per pass)
IDENTITY, DELETE, INSERT, MULTIPLY = 0, 1, 2, 3


@dataclass(frozen=True)
class SummaryField:
    """A per-photo scalar of a metric, averaged over a run (mean ± sd) in the report."""

    key: str  # in a photo's figures: "deletion_auc"
    label: str  # in the summary and the gallery: "deletion AUC"
    per_photo: bool = True  # shown in a photo's legend (False for a yes/no figure)


@dataclass(frozen=True)
class FaithfulnessMetric:
    """One faithfulness metric. Instances are immutable: the registry holds one of each."""

    name: ClassVar[str]  # as given on the command line: "deletion", "avgdrop", ...
    help: ClassVar[str]  # what it measures, in the command line's --metrics help
    reference: ClassVar[str]  # the paper
    summary: ClassVar[tuple[SummaryField, ...]]
    curve_colour: ClassVar[str | None] = None  # records ``<name>_curve``, drawn in this colour

    def passes(self, protocol: Protocol) -> int:
        """Forward passes one (photo, heatmap) costs for this metric (the unperturbed one apart)."""
        raise NotImplementedError


@dataclass(frozen=True)
class BlendMetric(FaithfulnessMetric):
    mode: ClassVar[int]  # DELETE, INSERT or MULTIPLY

    def ks(self, steps_k: np.ndarray) -> list[float]:
        """The ``k`` of each of a photo's passes, from the ``steps + 1`` step sizes ``k_t``."""
        raise NotImplementedError

    def baseline(self, protocol: Protocol) -> str | None:
        """The baseline its mode blends towards (``mean`` | ``blur``), None when unused."""
        return None

    def read(self, p: float, probs: np.ndarray) -> dict[str, Any]:
        """Its figures for one photo from the unperturbed probability ``p`` and its passes'
        probabilities (in the order of :meth:`ks`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class PassesMetric(FaithfulnessMetric):
    def compute(
        self, lm: Any, x: np.ndarray, cls: np.ndarray, heat: np.ndarray,
        probability: Sequence[float], protocol: Protocol, pass_batch: int, precision: str,
    ) -> list[dict[str, Any]]:
        """Its figures per photo of a batch: ``x`` the model inputs (N,H,W,3), ``heat`` the
        resized heatmaps (N,H,W,1), ``probability`` each photo's unperturbed ``p``."""
        raise NotImplementedError


def blend_ks(steps: int, pixels: int) -> np.ndarray:
    """``k_t = round(t·pixels/steps)`` for ``t = 0..steps``: pixels deleted/inserted at step t."""
    return np.array([round(t * pixels / steps) for t in range(steps + 1)], np.float32)


def blend(x: Any, per_image: tuple[Any, ...], per_pass: tuple[Any, ...], _shared: Any) -> Any:
    """Identity, deletion, insertion or multiplication by the heatmap, chosen per pass."""
    from keras import ops

    rank, heat, base_del, base_ins = per_image
    mode, k = per_pass
    mode = ops.reshape(mode, (-1, 1, 1, 1))
    k = ops.reshape(k, (-1, 1, 1, 1))
    one = ops.ones_like(heat)
    keep = ops.where(mode == DELETE, ops.cast(rank >= k, x.dtype), one)
    keep = ops.where(mode == INSERT, ops.cast(rank < k, x.dtype), keep)
    keep = ops.where(mode == MULTIPLY, heat, keep)
    base = ops.where(mode == DELETE, base_del, ops.where(mode == INSERT, base_ins, 0.0))
    return keep * x + (1.0 - keep) * base


def auc(curve: np.ndarray) -> float:
    """The trapezoid rule over a curve's fraction axis in [0, 1]."""
    return float((curve[:-1] + curve[1:]).sum() / (2 * (len(curve) - 1)))
