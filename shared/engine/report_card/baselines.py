"""Sanity baselines of the report card: maps made from the photo alone, never from the network.

Every real CAM method must beat them (Adebayo et al. 2018's sanity checks): a ``random`` map
(uniform noise, seeded by the photo's pixels so a re-run gives the same map) and an edge map
(``sobel``: the gradient magnitude of the grey image, lightly blurred). They are report-only
"methods": the card feeds their maps through the same faithfulness passes as the CAMs, and the
randomisation check too (where they must be flagged: they ignore the weights).

Adding one: a frozen dataclass subclassing :class:`ImageMethod`, listed in :data:`BASELINES`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np


@dataclass(frozen=True)
class ImageMethod:
    """A map made from the photo only. ``image`` is the model input (H×W×3 float32 pixels)."""

    name: ClassVar[str]

    def map(self, image: np.ndarray) -> np.ndarray:
        """The photo's (h, w) float32 map in [0, 1]."""
        raise NotImplementedError


def _unit(m: np.ndarray) -> np.ndarray:
    m = np.maximum(np.asarray(m, np.float32), 0.0)
    top = float(m.max())
    return m / top if top > 0 else m


@dataclass(frozen=True)
class RandomMap(ImageMethod):
    """Uniform noise on a ``cells``×``cells`` grid (a CAM-like resolution)."""

    name: ClassVar[str] = "random"
    cells: int = 14
    seed: int = 0

    def map(self, image: np.ndarray) -> np.ndarray:
        crc = zlib.crc32(np.ascontiguousarray(image, np.float32).tobytes())
        rng = np.random.default_rng([self.seed, crc])
        return _unit(rng.random((self.cells, self.cells), dtype=np.float32))


@dataclass(frozen=True)
class SobelMap(ImageMethod):
    """Edge strength: the Sobel gradient magnitude of the grey photo, Gaussian-blurred (σ=2)."""

    name: ClassVar[str] = "sobel"
    sigma: float = 2.0

    def map(self, image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(np.asarray(image, np.float32), cv2.COLOR_RGB2GRAY)
        dx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        dy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        mag = cv2.GaussianBlur(np.hypot(dx, dy), (0, 0), self.sigma)
        return _unit(mag)


BASELINES: dict[str, ImageMethod] = {m.name: m for m in (RandomMap(), SobelMap())}
