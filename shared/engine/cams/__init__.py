"""The CAM method registry: name → method class (one small module per method).

``check_methods`` validates a request (a comma-separated string or a sequence of names) before
anything is queued; ``get_methods`` builds the method objects the engine runs.

==============  ============  ==========================================================
name            kind          what it needs
==============  ============  ==========================================================
gradcam         gradient      the shared forward + backward pass (the default)
gradcam++       gradient      the same pass
xgradcam        gradient      the same pass
hirescam        gradient      the same pass
layercam        gradient      the same pass; meaningful at shallow layers too
eigencam        activation    activations only (forward pass; class-agnostic)
scorecam        perturbation  + one forward pass per kept channel per photo (capped)
==============  ============  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from convatlas.shared.engine.cams.base import (
    ACTIVATION,
    GRADIENT,
    PERTURBATION,
    ActivationMethod,
    CamMethod,
    GradientMethod,
    PassPlan,
    PerturbationMethod,
)
from convatlas.shared.engine.cams.eigencam import EigenCam
from convatlas.shared.engine.cams.gradcam import GradCam
from convatlas.shared.engine.cams.gradcam_pp import GradCamPlusPlus
from convatlas.shared.engine.cams.hirescam import HiResCam
from convatlas.shared.engine.cams.layercam import LayerCam
from convatlas.shared.engine.cams.scorecam import DEFAULT_MAX_CHANNELS, ScoreCam
from convatlas.shared.engine.cams.xgradcam import XGradCam

__all__ = [
    "ACTIVATION",
    "DEFAULT",
    "DEFAULT_MAX_CHANNELS",
    "GRADIENT",
    "METHODS",
    "PERTURBATION",
    "ActivationMethod",
    "CamMethod",
    "GradientMethod",
    "PassPlan",
    "PerturbationMethod",
    "check_methods",
    "get_methods",
    "method_slug",
]

METHODS: dict[str, type[CamMethod]] = {
    m.name: m
    for m in (GradCam, GradCamPlusPlus, XGradCam, HiResCam, LayerCam, EigenCam, ScoreCam)
}
DEFAULT: tuple[str, ...] = ("gradcam",)


def check_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """Validated method names, in the order given, duplicates dropped.

    ``methods`` is a comma-separated string (``"gradcam,scorecam"``) or a sequence of names.
    Raises ``ValueError`` naming every unknown one and listing the valid names; an empty request
    is refused too.
    """
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        what = f"unknown CAM method(s) {', '.join(map(repr, unknown))}" if unknown else "no CAM method"
        raise ValueError(f"{what}: choose from {', '.join(METHODS)}")
    return tuple(dict.fromkeys(names))


def method_slug(name: str) -> str:
    """The method's name as it may appear in object keys and file names (``gradcam++`` → ``gradcampp``)."""
    return METHODS[check_methods([name])[0]].slug


def get_methods(
    methods: str | Sequence[str], scorecam_channels: int | None = DEFAULT_MAX_CHANNELS
) -> tuple[CamMethod, ...]:
    """Method objects for validated names; ``scorecam_channels`` is Score-CAM's channel cap."""
    out: list[CamMethod] = []
    for name in check_methods(methods):
        cls = METHODS[name]
        out.append(cls(max_channels=scorecam_channels) if cls is ScoreCam else cls())
    return tuple(out)
