"""The faithfulness metrics' settings (``Protocol``): one object, recorded with the figures and
hashed into their result keys (see ``convatlas.shared.engine.faithfulness`` for what each
setting means)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

BASELINES = ("mean", "blur")


@dataclass(frozen=True)
class Protocol:
    """The metrics' settings (``faithfulness``'s docstring); ``describe()`` is what a record should keep."""

    steps: int = 20
    deletion_baseline: str = "mean"
    insertion_baseline: str = "blur"
    blur_kernel: int = 11
    blur_sigma: float = 5.0
    road_percentiles: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    road_noise: float = 0.01
    road_seed: int = 0
    road_iterations: int = 128
    road_coarse_iterations: int = 32

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        for b in (self.deletion_baseline, self.insertion_baseline):
            if b not in BASELINES:
                raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {b!r}")
        if not all(0 < q < 100 for q in self.road_percentiles) or not self.road_percentiles:
            raise ValueError(f"road percentiles must lie in (0, 100): {self.road_percentiles}")

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["road_percentiles"] = list(self.road_percentiles)
        return d

    def digest(self) -> str:
        """8 hex digits of the settings, for result keys: a change of protocol (steps, baselines,
        percentiles…) gives new keys, so figures made under another protocol are never reused."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]


PROTOCOL = Protocol()
