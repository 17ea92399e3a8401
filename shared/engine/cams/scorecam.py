"""Score-CAM (Wang et al., CVPR Workshops 2020, Algorithm 1): gradient-free; each channel's
weight is the class score of the image masked by that channel.

For each channel ``k`` kept (see the cap below): ``M_k`` = ``A_k`` resized bilinearly to the
network's input size (half-pixel centres, ``keras.ops.image.resize``) and min-max scaled to
[0, 1] (``(M - min) / (max - min + 1e-8)``, pytorch-grad-cam's form); the masked input is the
preprocessed image times ``M_k`` (so masked-out pixels become the preprocessing's zero: the
ImageNet mean colour for the built-ins, as pytorch-grad-cam masks its normalised tensors);
``s_k`` is the class's logit on it. Then

    w = softmax_k(s_k),    map = relu(Σ_k w_k A_k)

The softmax over channels makes a baseline score ``f(X_b)`` (the paper's CIC subtracts one)
irrelevant: softmax is shift-invariant. This is pytorch-grad-cam's ``ScoreCAM`` definition (logit
target, channel softmax); the authors' reference code weights by the masked images' softmax
*probabilities* without the channel softmax instead.

Cost and cap: one forward pass at the input size per channel kept, per image. EfficientNet-Lite0's
last layer has 1280 channels, so the uncapped method costs 1280 forward passes per photo (about
1280× a forward-only pass). ``max_channels`` (default :data:`DEFAULT_MAX_CHANNELS` = 256, so
≈ 256 forward passes per photo) keeps the channels with the largest spatial mean activation; a
channel that is zero everywhere contributes nothing to the map (its ``A_k`` is zero, and the
softmax denominator is a common factor removed by normalisation), so dropping those is exact;
dropping weakly active ones is an approximation. ``max_channels=None`` uses every channel
(pytorch-grad-cam's behaviour). Ties in the mean keep the lower channel index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convatlas.shared.engine.cams.base import PassPlan, PerturbationMethod

DEFAULT_MAX_CHANNELS = 256


def select_channels(features: np.ndarray, max_channels: int | None) -> np.ndarray:
    """(N,h,w,C) → (N,K) channel indices with the largest spatial mean, K = min(C, cap)."""
    n, _, _, c = features.shape
    k = c if max_channels is None else min(c, int(max_channels))
    if k == c:
        return np.broadcast_to(np.arange(c, dtype=np.int32), (n, c)).copy()
    means = features.mean(axis=(1, 2))
    order = np.argsort(-means, axis=1, kind="stable")[:, :k]
    return np.sort(order, axis=1).astype(np.int32)


@dataclass(frozen=True)
class ScoreCam(PerturbationMethod):
    name = "scorecam"
    slug = "scorecam"
    reference = "Wang et al., Score-CAM, CVPR Workshops 2020"
    max_channels: int | None = DEFAULT_MAX_CHANNELS

    def __post_init__(self) -> None:
        if self.max_channels is not None and self.max_channels < 1:
            raise ValueError(f"scorecam max_channels must be ≥ 1 or None, got {self.max_channels}")

    def describe(self) -> dict[str, Any]:
        return {"max_channels": self.max_channels}

    def plan(self, features: np.ndarray) -> PassPlan:
        n, h, w, _ = features.shape
        units = select_channels(features, self.max_channels)  # (N, K)
        k = units.shape[1]
        maps = np.take_along_axis(features, units[:, None, None, :], axis=3)  # (N,h,w,K)
        maps = np.ascontiguousarray(maps.transpose(0, 3, 1, 2).reshape(n * k, h, w, 1))
        image = np.repeat(np.arange(n, dtype=np.int32), k)
        return PassPlan(image=image, per_pass=(maps.astype(np.float32),), units=units)

    def perturb(self, x: Any, per_pass: tuple[Any, ...]) -> Any:
        from keras import ops

        (maps,) = per_pass  # (B,h,w,1)
        size = ops.shape(x)[1:3]
        up = ops.image.resize(maps, size, interpolation="bilinear")
        lo = ops.min(up, axis=(1, 2, 3), keepdims=True)
        hi = ops.max(up, axis=(1, 2, 3), keepdims=True)
        return x * ((up - lo) / (hi - lo + 1e-8))

    def combine(self, features: np.ndarray, plan: PassPlan, scores: np.ndarray) -> Any:
        from keras import ops

        n = features.shape[0]
        s = ops.reshape(ops.convert_to_tensor(scores, "float32"), (n, -1))  # (N, K)
        weights = ops.softmax(s, axis=-1)
        chosen = np.take_along_axis(features, plan.units[:, None, None, :], axis=3)
        return ops.einsum("nhwk,nk->nhw", ops.convert_to_tensor(chosen), weights)
