"""Grad-CAM++ (Chattopadhay et al., WACV 2018, eq. 19 with the exponential score).

With the class score ``S`` passed through ``exp``, the paper's higher-order derivatives reduce to
powers of the first one, ``g = dS/dA``:

    alpha_k,ij = g² / (2 g² + Σ_ab A_k,ab · g³)          (0 where the denominator is 0)
    w_k        = Σ_ij alpha_k,ij · relu(g_k,ij)
    map        = relu(Σ_k w_k A_k)

The common factor ``exp(S)`` of the weights cancels in the normalisation. A zero denominator is
replaced by 1 as in the authors' code (adityac94/Grad_CAM_plus_plus); pytorch-grad-cam adds 1e-7
instead, which differs only where the denominator is within ~1e-7 of zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convatlas.shared.engine.cams.base import GradientMethod


@dataclass(frozen=True)
class GradCamPlusPlus(GradientMethod):
    name = "gradcam++"
    slug = "gradcampp"
    reference = "Chattopadhay et al., Grad-CAM++, WACV 2018"

    def cam(self, features: Any, grads: Any) -> Any:
        from keras import ops

        g2 = grads * grads
        g3 = g2 * grads
        total = ops.sum(features, axis=(1, 2), keepdims=True)  # Σ_ab A_k,ab  (N,1,1,C)
        denom = 2.0 * g2 + total * g3
        alpha = g2 / ops.where(denom != 0, denom, ops.ones_like(denom))
        weights = ops.sum(alpha * ops.relu(grads), axis=(1, 2))  # (N, C)
        return ops.einsum("nhwc,nc->nhw", features, weights)
