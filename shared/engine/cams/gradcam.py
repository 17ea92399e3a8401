"""Grad-CAM (Selvaraju et al. 2017; the book's DLwP §5.4.3): channels weighted by the spatial
mean of the class score's gradients, summed, ReLU'd. The engine's default method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convatlas.shared.engine.cams.base import GradientMethod
from convatlas.shared.engine.heatmap import grad_cam_map


@dataclass(frozen=True)
class GradCam(GradientMethod):
    name = "gradcam"
    slug = "gradcam"
    reference = "Selvaraju et al., Grad-CAM, ICCV 2017"

    def cam(self, features: Any, grads: Any) -> Any:
        return grad_cam_map(features, grads)
