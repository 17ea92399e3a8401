"""Per-unit statistics of the dataset-examples score: photos seen, mean, spread and peak of
the score, how often the unit fired. They are sums, so a batch is added once (guarded by the
batch's id in the reduce's state)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["UnitStats"]


@dataclass(eq=False)
class UnitStats:
    """Per-unit statistics of the score over the photos seen (sums: add each batch once)."""

    count: int
    total: np.ndarray  # (C,) sum of scores
    total_sq: np.ndarray  # (C,) sum of squared scores
    fired: np.ndarray  # (C,) photos whose score is > 0
    peak: np.ndarray  # (C,) highest score (-inf before any photo)

    @classmethod
    def empty(cls, units: int) -> UnitStats:
        return cls(0, np.zeros(units), np.zeros(units), np.zeros(units, np.int64),
                   np.full(units, -np.inf))

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> UnitStats:
        s = np.asarray(scores, np.float64)
        return cls(int(s.shape[0]), s.sum(0), (s * s).sum(0), (s > 0).sum(0).astype(np.int64),
                   s.max(0) if len(s) else np.full(s.shape[1], -np.inf))

    def add(self, other: UnitStats) -> UnitStats:
        return UnitStats(self.count + other.count, self.total + other.total,
                         self.total_sq + other.total_sq, self.fired + other.fired,
                         np.maximum(self.peak, other.peak))

    def unit(self, u: int) -> dict[str, Any]:
        """Photos seen, mean and standard deviation of the score, peak, fraction that fired."""
        n = self.count
        mean = self.total[u] / n if n else None
        var = max(0.0, self.total_sq[u] / n - mean * mean) if n and mean is not None else None
        return {"photos": n, "mean": mean, "std": None if var is None else math.sqrt(var),
                "peak": float(self.peak[u]) if n else None,
                "fired": float(self.fired[u] / n) if n else None}

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total.tolist(),
                "total_sq": self.total_sq.tolist(), "fired": self.fired.tolist(),
                "peak": [None if not np.isfinite(v) else float(v) for v in self.peak]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UnitStats:
        return cls(int(d["count"]), np.asarray(d["total"], np.float64),
                   np.asarray(d["total_sq"], np.float64), np.asarray(d["fired"], np.int64),
                   np.asarray([-np.inf if v is None else v for v in d["peak"]], np.float64))
