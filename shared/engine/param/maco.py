"""MaCo's image parametrisation: only the Fourier phase is optimised, the magnitude is fixed.

Fel et al., *Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained
Optimization* (NeurIPS 2023, arXiv 2306.06805); as Xplique's ``maco_image_parametrization`` and
Horama's ``maco_preconditioner``:

1. the variable is a phase, (3, size, size // 2 + 1) per sample, started from N(0, 1);
2. it is standardised (mean 0, standard deviation 1 over the sample; + 1e-5);
3. the spectrum is ``magnitude · e^(i·phase)``, with ``magnitude`` a natural-image spectrum
   (``spectra``) that is never optimised;
4. an inverse real 2-D FFT gives three channels, standardised again over the sample;
5. colours go from Lucid's decorrelated space to RGB (``fourier.COLOR_TO_RGB``, the matrix
   Xplique and Horama use) and a sigmoid brings them into (0, 1); × 255 gives pixels.

One addition: on the columns of frequency 0 and (even sizes) 1/2 a real image's spectrum is
Hermitian along the height, so there the phase is made odd (φ(−k) = −φ(k), 0 where k = −k) and
the magnitude even. The inverse transform then drops nothing, and the image's spectrum has the
prescribed magnitude exactly (before step 4's standardisation, which scales it and zeroes the
DC term). Xplique's ``irfft2d`` silently drops those parts instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convatlas.shared.engine.param.fourier import COLOR_TO_RGB, inverse_dft_matrices

PHASE_SD = 1.0  # Xplique's init_maco_buffer, Horama's std_deviation
EPS = 1e-5  # Xplique's standardisation epsilon


def _hermitian_columns(w: int) -> np.ndarray:
    """(w // 2 + 1,) bool: the columns whose spectrum must be Hermitian along the height."""
    kx = np.arange(w // 2 + 1)
    return (kx == 0) | ((w % 2 == 0) & (kx == w // 2))


@dataclass(frozen=True)
class PhaseImage:
    size: int
    magnitude: np.ndarray = field(repr=False, compare=False)  # (3, size, size // 2 + 1)
    sd: float = PHASE_SD
    cols: np.ndarray = field(init=False, repr=False, compare=False)
    flip: np.ndarray = field(init=False, repr=False, compare=False)
    dft_h: np.ndarray = field(init=False, repr=False, compare=False)
    dft_w: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        h = w = self.size
        mag = np.asarray(self.magnitude, np.float32)
        if mag.shape != self.shape:
            raise ValueError(f"magnitude must be {self.shape}, got {mag.shape}")
        flip = (-np.arange(h)) % h  # row k → row −k
        cols = _hermitian_columns(w)
        mag = mag.copy()
        mag[:, :, cols] = 0.5 * (mag[:, :, cols] + mag[:, flip][:, :, cols])
        object.__setattr__(self, "magnitude", mag)
        object.__setattr__(self, "cols", cols)
        object.__setattr__(self, "flip", flip)
        a, b = inverse_dft_matrices(h, w)
        object.__setattr__(self, "dft_h", a)
        object.__setattr__(self, "dft_w", b)

    @property
    def shape(self) -> tuple[int, int, int]:
        """One sample's variable: (channel, height, frequencies along the width)."""
        return (3, self.size, self.size // 2 + 1)

    def init(self, filter_index: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, filter_index, 2])
        return rng.normal(0.0, self.sd, self.shape).astype(np.float32)

    def to_pixels(self, v: Any) -> Any:
        from keras import ops

        h = w = self.size
        wf = w // 2 + 1
        phase = _standardise(v, (1, 2, 3))
        odd = 0.5 * (phase - ops.take(phase, ops.convert_to_tensor(self.flip), axis=2))
        phase = ops.where(ops.convert_to_tensor(self.cols), odd, phase)
        mag = ops.convert_to_tensor(self.magnitude)
        spec = ops.stack([ops.cos(phase) * mag, ops.sin(phase) * mag], axis=1)  # (N, 2, 3, h, wf)
        # the inverse real 2-D FFT as two GEMMs (fourier.inverse_dft_matrices)
        rows = ops.reshape(ops.transpose(spec, (0, 2, 4, 1, 3)), (-1, 2 * h))
        y = ops.reshape(ops.matmul(rows, ops.convert_to_tensor(self.dft_h)), (-1, 3, wf, 2, h))
        y = ops.reshape(ops.transpose(y, (0, 1, 4, 3, 2)), (-1, 2 * wf))
        img = ops.reshape(ops.matmul(y, ops.convert_to_tensor(self.dft_w)), (-1, 3, h, w))
        img = _standardise(ops.transpose(img, (0, 2, 3, 1)), (1, 2, 3))  # (N, h, w, 3)
        return ops.sigmoid(ops.matmul(img, ops.convert_to_tensor(COLOR_TO_RGB))) * 255.0

    # NumPy references (tests, reading stored variables)

    def spectrum_numpy(self, v: np.ndarray) -> np.ndarray:
        """The complex spectrum (N, 3, size, size // 2 + 1) that step 4 inverse-transforms."""
        phase = v - v.mean(axis=(1, 2, 3), keepdims=True)
        phase = phase / (phase.std(axis=(1, 2, 3), keepdims=True) + EPS)
        odd = 0.5 * (phase - phase[:, :, self.flip])
        phase = np.where(self.cols, odd, phase)
        return self.magnitude * np.exp(1j * phase)

    def to_pixels_numpy(self, v: np.ndarray) -> np.ndarray:
        img = np.fft.irfft2(self.spectrum_numpy(v), s=(self.size, self.size)).transpose(0, 2, 3, 1)
        img = img - img.mean(axis=(1, 2, 3), keepdims=True)
        img = img / (img.std(axis=(1, 2, 3), keepdims=True) + EPS)
        return (255.0 / (1.0 + np.exp(-(img @ COLOR_TO_RGB)))).astype(np.float32)


def _standardise(x: Any, axes: tuple[int, ...]) -> Any:
    from keras import ops

    x = x - ops.mean(x, axis=axes, keepdims=True)
    return x / (ops.std(x, axis=axes, keepdims=True) + EPS)
