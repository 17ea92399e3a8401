"""The book's parametrisation: the variable is the image itself (0–255 scale), started from grey
noise 128 + 20·U[0, 1) (``objectives.start_image``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convatlas.shared.engine.objectives import start_image


@dataclass(frozen=True)
class Pixels:
    size: int

    def init(self, filter_index: int, seed: int) -> np.ndarray:
        return start_image(filter_index, self.size, seed)

    def to_pixels(self, v: Any) -> Any:
        return v
