"""XGrad-CAM (Fu et al., BMVC 2020, eq. 11): channel weights are the gradients averaged with the
channel's own normalised activations as weights,

    w_k = Σ_ij (A_k,ij / Σ_ab A_k,ab) · g_k,ij        (0 for a channel whose activations sum to 0)
    map = relu(Σ_k w_k A_k)

pytorch-grad-cam adds 1e-7 to the sum instead of treating 0 apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convatlas.shared.engine.cams.base import GradientMethod


@dataclass(frozen=True)
class XGradCam(GradientMethod):
    name = "xgradcam"
    slug = "xgradcam"
    reference = "Fu et al., Axiom-based Grad-CAM (XGrad-CAM), BMVC 2020"

    def cam(self, features: Any, grads: Any) -> Any:
        from keras import ops

        total = ops.sum(features, axis=(1, 2), keepdims=True)  # (N,1,1,C)
        safe = ops.where(total != 0, total, ops.ones_like(total))
        weights = ops.sum(grads * features / safe, axis=(1, 2))  # (N, C)
        return ops.einsum("nhwc,nc->nhw", features, weights)
