"""Pattern styles: one (parametrisation, transforms, optimiser, defaults, image) per name.

- ``book`` (the default; DLwP §5.4.2): raw pixels from grey noise, no transforms, 40
  RMS-normalised gradient steps of size 1; the image is the book's ``deprocess`` of the pixels.
- ``lucid`` (Olah et al., *Feature Visualization*, Distill 2017; Lucid's ``render_vis``): a
  decorrelated Fourier-space image with a sigmoid to RGB (``param.fourier``), Lucid's standard
  transforms sampled per sample and per step then cropped back (``transforms``), Adam with
  learning rate 0.05, 256 steps; the image is the rendered pixels themselves (already in 0–255).
- ``maco`` (Fel et al., *MAgnitude Constrained Optimization*, NeurIPS 2023; Xplique's ``maco``):
  only the Fourier phase is optimised, the magnitude fixed to a natural-image spectrum
  (``param.maco``, ``param.spectra``: the sample photos', or ``--spectrum-from DIR``), under
  MaCo's random crops and noise (``transforms.maco_transforms``), NAdam with learning rate 1.0,
  256 steps (the paper's values). It also gives a transparency (alpha) map: the accumulated
  |gradient| of the objective with respect to the image's pixels (``alpha``).

Dead filters, in every style: a filter is *dead* when the gradient of its activation objective
with respect to the optimised variable is exactly zero on the untransformed start image, i.e. its
ReLU output is zero everywhere on that image. For the book that image is grey noise; for lucid it
is the start spectrum's render, a nearly uniform grey (sigmoid(≈0) · 255 ≈ 127.5) with faint
coloured noise. Every map from the variable to pixels is invertible with a non-zero Jacobian
(identity; inverse FFT, colour matrix and sigmoid), so "zero gradient" means the same thing in both
spaces. With ``fallback="preactivation"`` a dead filter is optimised on its pre-activation for the
whole run; ``start_activation``/``final_activation`` are always the post-activation objective on
the untransformed image. One difference under lucid: with ``fallback="none"`` a dead filter's
pattern need not stay at its start, because a transformed start (the grey border, shifted or
rotated noise) can give it a gradient; the book's stays exactly at the start image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from convatlas.shared.engine.objectives import deprocess
from convatlas.shared.engine.optimisers import Adam, Nadam, Optimiser, RmsStep
from convatlas.shared.engine.param import Parametrisation
from convatlas.shared.engine.param.fourier import FourierImage
from convatlas.shared.engine.param.maco import PhaseImage
from convatlas.shared.engine.param.pixels import Pixels
from convatlas.shared.engine.transforms import Transform, lucid_transforms, maco_transforms


def rendered(x: np.ndarray) -> np.ndarray:
    """Pixels already on the 0–255 scale, as an image: rounded, clipped, uint8."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Style:
    name: str
    default_steps: int
    default_step_size: float
    parametrisation: Callable[..., Parametrisation]  # (tile size[, spectrum]) → parametrisation
    transforms: Callable[[int], tuple[Transform, ...]]  # tile size → transforms
    optimiser: Optimiser
    to_image: Callable[[np.ndarray], np.ndarray]  # the optimised pixels → uint8 image
    size_bound: bool  # compiled per tile size (its parametrisation or transforms depend on it)
    spectrum: bool = False  # its parametrisation takes a magnitude spectrum (``spectrum_from``)
    alpha: bool = False  # its ascent accumulates a transparency map

    def make_parametrisation(self, size: int, spectrum_from: str = "") -> Parametrisation:
        """The parametrisation of one tile size (with the spectrum named by ``spectrum_from``,
        "" = the shipped one, for a style that takes one)."""
        if not self.spectrum:
            return self.parametrisation(size)
        from convatlas.shared.engine.param.spectra import magnitude

        return self.parametrisation(size, magnitude(spectrum_from, size))

    def key_suffix(self) -> str:
        """What this style adds to a result key: nothing for the book (keys made before styles
        existed stay valid), ``-<name>`` otherwise."""
        return "" if self.name == DEFAULT else f"-{self.name}"


def _no_transforms(size: int) -> tuple[Transform, ...]:
    return ()


DEFAULT = "book"

STYLES: dict[str, Style] = {
    "book": Style(
        name="book",
        default_steps=40,
        default_step_size=1.0,
        parametrisation=Pixels,
        transforms=_no_transforms,
        optimiser=RmsStep(),
        to_image=deprocess,
        size_bound=False,
    ),
    "lucid": Style(
        name="lucid",
        default_steps=256,
        default_step_size=0.05,
        parametrisation=FourierImage,
        transforms=lucid_transforms,
        optimiser=Adam(),
        to_image=rendered,
        size_bound=True,
    ),
    "maco": Style(
        name="maco",
        default_steps=256,
        default_step_size=1.0,
        parametrisation=PhaseImage,
        transforms=maco_transforms,
        optimiser=Nadam(),
        to_image=rendered,
        size_bound=True,
        spectrum=True,
        alpha=True,
    ),
}


def get_style(name: str) -> Style:
    if name not in STYLES:
        raise ValueError(f"style must be one of {sorted(STYLES)}, got {name!r}")
    return STYLES[name]
