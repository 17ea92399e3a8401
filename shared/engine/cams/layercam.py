"""Layer-CAM (Jiang et al., IEEE TIP 2021, eq. 5–6): each position's activation is weighted by its
own positive gradient,

    map = relu(Σ_k relu(g_k) ⊙ A_k)

It stays meaningful at shallow layers (fine-grained maps), so the engine's ``layer`` matters here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convatlas.shared.engine.cams.base import GradientMethod


@dataclass(frozen=True)
class LayerCam(GradientMethod):
    name = "layercam"
    slug = "layercam"
    reference = "Jiang et al., LayerCAM, IEEE Trans. Image Processing 30, 2021"

    def cam(self, features: Any, grads: Any) -> Any:
        from keras import ops

        return ops.sum(ops.relu(grads) * features, axis=-1)
