"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the layer's activations projected on their first
principal component; gradient-free and class-agnostic (the same map for every class).

Per image, the (h·w, C) activation matrix is centred over positions (as pytorch-grad-cam does:
without it the first component mostly measures the mean), ``X = U Σ Vᵀ``, and the map is the
projection ``X v₁ = σ₁ u₁`` reshaped to (h, w), then ReLU'd and normalised like every method.

Only the first component is needed, so it comes from the smaller of the two Gram matrices rather
than a full SVD (which was ~10 % of a forward pass at EfficientNet-Lite0's 7×7×1280 head): with
h·w ≤ C, ``X Xᵀ = U Σ² Uᵀ`` and the map is ``√λ₁ u₁``; otherwise ``Xᵀ X = V Σ² Vᵀ`` and the map
is ``X v₁``. Both are the SVD's projection up to its sign.

Sign convention: a singular vector's sign is arbitrary (it differs between LAPACK builds, and
pytorch-grad-cam leaves it so). Here the sign is chosen so that the map correlates positively
with the channel-summed activation Σ_k A_k (equivalently Σ_c v₁,c ≥ 0): the map is high where
the layer is, on the whole, more active. A map exactly uncorrelated with it keeps the SVD's sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convatlas.shared.engine.cams.base import ActivationMethod


@dataclass(frozen=True)
class EigenCam(ActivationMethod):
    name = "eigencam"
    slug = "eigencam"
    reference = "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020"

    def cam(self, features: Any) -> Any:
        from keras import ops

        n, h, w, c = ops.shape(features)
        x = ops.reshape(features, (-1, h * w, c))
        x = x - ops.mean(x, axis=1, keepdims=True)
        if h * w <= c:  # (N, hw, hw): eigenvalues ascending, so the last pair is σ₁², u₁
            lam, vecs = ops.eigh(ops.matmul(x, ops.transpose(x, (0, 2, 1))))
            proj = vecs[:, :, -1] * ops.sqrt(ops.maximum(lam[:, -1:], 0.0))
        else:  # (N, C, C) → v₁, then X v₁
            _, vecs = ops.eigh(ops.matmul(ops.transpose(x, (0, 2, 1)), x))
            proj = ops.matmul(x, vecs[:, :, -1:])[:, :, 0]
        agree = ops.sum(proj * ops.sum(x, axis=-1), axis=1, keepdims=True)
        proj = ops.where(agree < 0, -proj, proj)
        return ops.reshape(proj, (-1, h, w))
