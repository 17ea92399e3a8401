"""Model-randomisation check (Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018).

A clone of the model has its top ``layers`` weighted layers re-drawn (kernels: Gaussian with the
original tensor's mean and standard deviation; 1-D tensors such as biases and batch-norm
statistics: randomly permuted, so variances stay valid). A method's maps on the clone are
compared with its maps on the original by Spearman rank correlation per photo (both resized to
the larger of the two grids); a method whose mean correlation is above ``threshold`` does not
depend on what the network learnt and is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.stats import spearmanr

from convatlas.shared.models.registry import LoadedModel

DEFAULT_LAYERS = 3  # head conv, its batch norm and the classifier for the EfficientNets
DEFAULT_THRESHOLD = 0.5
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Randomisation:
    """The check's settings (part of the report card's key)."""

    layers: int = DEFAULT_LAYERS
    threshold: float = DEFAULT_THRESHOLD
    seed: int = DEFAULT_SEED

    def describe(self) -> dict[str, float | int]:
        return {"layers": self.layers, "threshold": self.threshold, "seed": self.seed}


RANDOMISATION = Randomisation()


def randomised_layers(model: object, count: int) -> list[str]:
    """Names of the last ``count`` layers that have weights, top first."""
    weighted = [layer.name for layer in model.layers if layer.weights]  # type: ignore[attr-defined]
    return list(reversed(weighted))[:count]


def randomised_model(lm: LoadedModel, settings: Randomisation) -> tuple[LoadedModel, list[str]]:
    """A clone of ``lm`` with its top layers' weights re-drawn, and those layers' names."""
    import keras

    clone = keras.models.clone_model(lm.model)
    clone.set_weights(lm.model.get_weights())
    rng = np.random.default_rng(settings.seed)
    names = randomised_layers(clone, settings.layers)
    for name in names:
        layer = clone.get_layer(name)
        redrawn = []
        for w in layer.get_weights():
            if w.ndim >= 2:
                redrawn.append(rng.normal(w.mean(), w.std() or 1.0, w.shape).astype(w.dtype))
            else:
                redrawn.append(rng.permutation(w))
        layer.set_weights(redrawn)
    wid = f"{lm.weights_id}-randomised-{settings.seed}-{settings.layers}"
    return LoadedModel(lm.spec, clone, wid, 0.0), names


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps (resized to the larger grid); 1.0 when both are flat."""
    side = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    ra = cv2.resize(np.asarray(a, np.float32), side[::-1], interpolation=cv2.INTER_LINEAR)
    rb = cv2.resize(np.asarray(b, np.float32), side[::-1], interpolation=cv2.INTER_LINEAR)
    if np.ptp(ra) == 0 and np.ptp(rb) == 0:
        return 1.0
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return 0.0
    return float(spearmanr(ra.ravel(), rb.ravel()).statistic)
