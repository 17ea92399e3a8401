"""Insertion (Petsiuk et al., RISE, BMVC 2018): the class's probability as the most salient pixels
are shown over the insertion baseline, 5 % more per step; its AUC (higher is better)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convatlas.shared.engine.metrics.base import INSERT, BlendMetric, SummaryField, auc
from convatlas.shared.engine.metrics.protocol import Protocol


@dataclass(frozen=True)
class Insertion(BlendMetric):
    name = "insertion"
    help = "AUC of the insertion curve"
    reference = "Petsiuk et al., RISE, BMVC 2018"
    summary = (SummaryField("insertion_auc", "insertion AUC"),)
    curve_colour = "#5c5"
    mode = INSERT

    def passes(self, protocol: Protocol) -> int:
        return protocol.steps

    def ks(self, steps_k: np.ndarray) -> list[float]:
        return [float(k) for k in steps_k[:-1]]  # t = 0..S-1 (t = S is the unperturbed pass)

    def baseline(self, protocol: Protocol) -> str | None:
        return protocol.insertion_baseline

    def read(self, p: float, probs: np.ndarray) -> dict[str, Any]:
        curve = np.concatenate([probs, [p]])
        return {"insertion_auc": auc(curve), "insertion_curve": [float(v) for v in curve]}
