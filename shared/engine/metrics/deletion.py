"""Deletion (Petsiuk et al., RISE, BMVC 2018): the class's probability as the most salient pixels
are replaced by the deletion baseline, 5 % more per step; its AUC (lower is better)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convatlas.shared.engine.metrics.base import DELETE, BlendMetric, SummaryField, auc
from convatlas.shared.engine.metrics.protocol import Protocol


@dataclass(frozen=True)
class Deletion(BlendMetric):
    name = "deletion"
    help = "AUC of the deletion curve"
    reference = "Petsiuk et al., RISE, BMVC 2018"
    summary = (SummaryField("deletion_auc", "deletion AUC"),)
    curve_colour = "#e55"
    mode = DELETE

    def passes(self, protocol: Protocol) -> int:
        return protocol.steps

    def ks(self, steps_k: np.ndarray) -> list[float]:
        return [float(k) for k in steps_k[1:]]  # t = 1..S (t = 0 is the unperturbed pass)

    def baseline(self, protocol: Protocol) -> str | None:
        return protocol.deletion_baseline

    def read(self, p: float, probs: np.ndarray) -> dict[str, Any]:
        curve = np.concatenate([[p], probs])
        return {"deletion_auc": auc(curve), "deletion_curve": [float(v) for v in curve]}
