"""HiResCAM (Draelos & Carin 2020): the gradients multiply the activations element-wise before
the channel sum, instead of being averaged first (Grad-CAM),

    map = relu(Σ_k g_k ⊙ A_k)

Where the score is linear in the layer (global average pool + dense, as after the built-in
classifiers' last conv layer) the gradients are constant over positions, the map equals
Grad-CAM's, and before the ReLU it sums to the score minus the dense layer's bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convatlas.shared.engine.cams.base import GradientMethod


@dataclass(frozen=True)
class HiResCam(GradientMethod):
    name = "hirescam"
    slug = "hirescam"
    reference = "Draelos & Carin, Use HiResCAM instead of Grad-CAM, arXiv:2011.08891 (2020)"

    def cam(self, features: Any, grads: Any) -> Any:
        from keras import ops

        return ops.sum(grads * features, axis=-1)
