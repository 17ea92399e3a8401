"""Parametrisations: how the variable an ascent optimises becomes pixels.

Lucid splits feature visualisation into objective × parametrisation × transforms; this package is
the middle factor. A parametrisation is bound to one tile size and gives

- ``init(filter_index, seed)``: the variable's start value for one filter (NumPy, host side;
  seeded per (seed, filter), so a filter's pattern does not depend on the other filters of its
  batch);
- ``to_pixels(v)``: ``keras.ops``, a batch of variables → RGB pixels (N, size, size, 3) on the
  0–255 scale, which the model's own preprocessing then takes, as in the book.

Modules: ``pixels`` (the book's: the variable is the image, grey-noise start) and ``fourier``
(Lucid's decorrelated Fourier-space image with a sigmoid to RGB).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Parametrisation(Protocol):
    @property
    def size(self) -> int: ...

    def init(self, filter_index: int, seed: int) -> np.ndarray:
        """The start value of one filter's variable (float32)."""
        ...

    def to_pixels(self, v: Any) -> Any:
        """(N, *variable shape) → (N, size, size, 3) pixels, 0–255 scale (``keras.ops``)."""
        ...
