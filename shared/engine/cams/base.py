"""The CAM method seam: a method turns a layer's activations (and gradients) into a raw map.

Three kinds, by what they need from the network (``kind``):

- ``gradient`` (:class:`GradientMethod`): ``cam(features, grads)``. All gradient methods asked for
  one batch share ONE compiled forward + backward pass; each adds only its arithmetic.
- ``activation`` (:class:`ActivationMethod`): ``cam(features)``, gradient-free. It rides on the
  gradient pass when one runs, else on a forward-only pass.
- ``perturbation`` (:class:`PerturbationMethod`): gradient-free methods that need extra forward
  passes. ``plan(features)`` lists the passes (per pass: which image, plus per-pass arrays);
  ``perturb(x, per_pass)`` turns each pass's (preprocessed) image into the network's input inside
  the compiled pass; ``combine(features, plan, scores)`` turns the class scores of all passes into
  the raw map. The engine batches the passes of many images together (``pass_batch`` at a time).

Raw maps are (N, h, w) at the layer's resolution; the engine ReLUs each and divides it by its
maximum (``heatmap.normalise``), for every method alike. Features and gradients are float32
``(N, h, w, C)``; everything here is ``keras.ops`` (or NumPy for the host-side planning), so a
non-TensorFlow backend reuses the methods unchanged.

Adding a method: one small module with a frozen dataclass subclassing one of the three bases,
listed in ``cams/__init__.py``'s ``METHODS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

GRADIENT = "gradient"
ACTIVATION = "activation"
PERTURBATION = "perturbation"


@dataclass(frozen=True)
class CamMethod:
    """One CAM method. Instances are immutable and hashable: they key compiled passes."""

    name: ClassVar[str]  # as given on the command line: "gradcam", "gradcam++", ...
    slug: ClassVar[str]  # safe in object keys and file names: "gradcampp" for "gradcam++"
    kind: ClassVar[str]
    reference: ClassVar[str]  # the paper

    def describe(self) -> dict[str, Any]:
        """Settings that change the result (for records); empty for parameter-free methods."""
        return {}


@dataclass(frozen=True)
class GradientMethod(CamMethod):
    kind: ClassVar[str] = GRADIENT

    def cam(self, features: Any, grads: Any) -> Any:
        """(N,h,w,C) activations and d(class score)/d(activations) → raw (N,h,w) map."""
        raise NotImplementedError


@dataclass(frozen=True)
class ActivationMethod(CamMethod):
    kind: ClassVar[str] = ACTIVATION

    def cam(self, features: Any) -> Any:
        """(N,h,w,C) activations → raw (N,h,w) map."""
        raise NotImplementedError


@dataclass(frozen=True)
class PassPlan:
    """The extra forward passes of a perturbation method for one batch of images.

    ``image[p]`` is the batch index of the image pass ``p`` perturbs; ``per_pass`` are arrays
    whose first axis is the pass (sliced into chunks with ``image``); ``units`` is what the method
    needs back in ``combine`` (e.g. the channels chosen per image).
    """

    image: np.ndarray  # (P,) int32
    per_pass: tuple[np.ndarray, ...]
    units: np.ndarray

    @property
    def passes(self) -> int:
        return len(self.image)


@dataclass(frozen=True)
class PerturbationMethod(CamMethod):
    kind: ClassVar[str] = PERTURBATION

    def plan(self, features: np.ndarray) -> PassPlan:
        """The passes for a batch, from its (N,h,w,C) activations (host side, NumPy)."""
        raise NotImplementedError

    def perturb(self, x: Any, per_pass: tuple[Any, ...]) -> Any:
        """(B,H,W,3) preprocessed images of B passes + their per-pass arrays → network inputs."""
        raise NotImplementedError

    def combine(self, features: np.ndarray, plan: PassPlan, scores: np.ndarray) -> Any:
        """Class scores (logits) of all passes, (P,) in plan order → raw (N,h,w) maps."""
        raise NotImplementedError
