"""Average Drop / Increase in Confidence (Chattopadhay et al., Grad-CAM++, WACV 2018; torch-cam's
``ClassificationMetric``): the class's probability on the input times the heatmap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convatlas.shared.engine.metrics.base import MULTIPLY, BlendMetric, SummaryField
from convatlas.shared.engine.metrics.protocol import Protocol


@dataclass(frozen=True)
class AvgDrop(BlendMetric):
    name = "avgdrop"
    help = "Average Drop / Increase in Confidence"
    reference = "Chattopadhay et al., Grad-CAM++, WACV 2018"
    summary = (SummaryField("avg_drop", "Average Drop"),
               SummaryField("conf_increase", "Increase in Confidence", per_photo=False))
    mode = MULTIPLY

    def passes(self, protocol: Protocol) -> int:
        return 1

    def ks(self, steps_k: np.ndarray) -> list[float]:
        return [0.0]

    def read(self, p: float, probs: np.ndarray) -> dict[str, Any]:
        pm = float(probs[0])
        return {"avg_drop": max(0.0, p - pm) / (p + 1e-7),  # torch-cam's guard against p = 0
                "conf_increase": bool(pm > p), "masked_probability": pm}
