"""Lucid's image parametrisation: a decorrelated Fourier-space image with a sigmoid to RGB.

As ``lucid.optvis.param.image(size, fft=True, decorrelate=True)`` (``param/spatial.py``
``fft_image`` and ``param/color.py`` ``to_valid_rgb``):

1. the variable is a real/imaginary spectrum, (2, 3, size, size // 2 + 1) per sample, started
   from normal noise of standard deviation 0.01;
2. each frequency is scaled by 1 / max(f, 1 / max(w, h)), times √(w·h) (decay power 1: the
   1/f spectrum of natural images, so every frequency band starts with comparable energy);
3. an inverse real 2-D FFT gives three channels, divided by 4 (Lucid's constant);
4. colours are mapped from a decorrelated space to RGB by the square root of ImageNet's colour
   correlation (Lucid's ``color_correlation_svd_sqrt``, normalised by its largest column norm);
5. a sigmoid brings them into (0, 1); × 255 gives pixels on the scale the model's own
   preprocessing takes (the same as the book's pixels).

One deviation: for odd sizes Lucid keeps w // 2 + 2 frequencies and crops a pixel off the
inverse transform; here the spectrum has the usual w // 2 + 1 frequencies and the inverse
transform is told the width, so every size round-trips exactly (``from_pixels``). Even sizes
(the 64 px default) are the same as Lucid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
MAX_NORM_SVD_SQRT = float(np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)))
#: decorrelated colour → RGB: ``rgb = t @ COLOR_TO_RGB`` (Lucid's ``t_flat @ normalized.T``)
COLOR_TO_RGB = (COLOR_CORRELATION_SVD_SQRT / MAX_NORM_SVD_SQRT).T.astype(np.float32)
SPECTRUM_SD = 0.01
LUCID_DIVISOR = 4.0


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """|frequency| of each bin of a real 2-D spectrum, (h, w // 2 + 1), in cycles per pixel."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.abs(np.fft.fftfreq(w)[: w // 2 + 1])  # |−0.5| = 0.5 for the Nyquist bin of even w
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """Lucid's per-frequency scale: 1 / max(f, 1 / max(w, h))^decay, × √(w·h); (h, w // 2 + 1)."""
    freqs = rfft2d_freqs(h, w)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
    return (scale * np.sqrt(w * h)).astype(np.float32)


def inverse_dft_matrices(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy's ``irfft2`` (complex inverse along the height, real inverse along the width) as two
    real matrices, for row vectors: ``[Re | Im] @ a`` along the height gives ``[Yre | Yim]``,
    then ``[Yre | Yim] @ b`` along the width gives the image. The imaginary parts of the DC (and,
    for even w, Nyquist) columns drop out, as in ``irfft``.

    At tile sizes two small GEMMs are several times faster on a CPU than TensorFlow's FFT kernels
    (and their gradient is two more GEMMs)."""
    k = np.arange(h)
    ang = 2.0 * np.pi * np.outer(k, k) / h  # (ky, y), symmetric
    ch, sh = np.cos(ang) / h, np.sin(ang) / h
    a = np.block([[ch, sh], [-sh, ch]])  # [R | I] @ a = [R·ch − I·sh | R·sh + I·ch]
    kx = np.arange(w // 2 + 1)
    weight = np.where((kx == 0) | ((w % 2 == 0) & (kx == w // 2)), 1.0, 2.0)[:, None]
    angw = 2.0 * np.pi * np.outer(kx, np.arange(w)) / w
    b = np.concatenate([weight * np.cos(angw) / w, -weight * np.sin(angw) / w], axis=0)
    return a.astype(np.float32), b.astype(np.float32)


@dataclass(frozen=True)
class FourierImage:
    size: int
    sd: float = SPECTRUM_SD
    decay_power: float = 1.0
    scale: np.ndarray = field(init=False, repr=False, compare=False)
    dft_h: np.ndarray = field(init=False, repr=False, compare=False)
    dft_w: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", spectrum_scale(self.size, self.size, self.decay_power))
        a, b = inverse_dft_matrices(self.size, self.size)
        object.__setattr__(self, "dft_h", a)
        object.__setattr__(self, "dft_w", b)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """One sample's variable: (re/im, channel, height, frequencies along the width)."""
        return (2, 3, self.size, self.size // 2 + 1)

    def init(self, filter_index: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, filter_index])
        return rng.normal(0.0, self.sd, self.shape).astype(np.float32)

    def to_pixels(self, v: Any) -> Any:
        from keras import ops

        h = w = self.size
        wf = w // 2 + 1
        v = v * ops.convert_to_tensor(self.scale)  # (N, 2, 3, h, wf)
        # the inverse real 2-D FFT as two GEMMs (inverse_dft_matrices)
        rows = ops.reshape(ops.transpose(v, (0, 2, 4, 1, 3)), (-1, 2 * h))  # (N·3·wf, [Re | Im])
        y = ops.reshape(ops.matmul(rows, ops.convert_to_tensor(self.dft_h)), (-1, 3, wf, 2, h))
        y = ops.reshape(ops.transpose(y, (0, 1, 4, 3, 2)), (-1, 2 * wf))  # (N·3·h, [Yre | Yim])
        img = ops.reshape(ops.matmul(y, ops.convert_to_tensor(self.dft_w)), (-1, 3, h, w))
        img = ops.transpose(img, (0, 2, 3, 1)) / LUCID_DIVISOR  # (N, h, w, 3)
        rgb = ops.matmul(img, ops.convert_to_tensor(COLOR_TO_RGB))
        return ops.sigmoid(rgb) * 255.0

    def to_pixels_numpy(self, v: np.ndarray) -> np.ndarray:
        """The same mapping in NumPy (a reference for tests and for reading stored variables)."""
        spec = (v[:, 0] + 1j * v[:, 1]) * self.scale
        img = np.fft.irfft2(spec, s=(self.size, self.size)).transpose(0, 2, 3, 1) / LUCID_DIVISOR
        return (255.0 / (1.0 + np.exp(-(img @ COLOR_TO_RGB)))).astype(np.float32)

    def from_pixels(self, pixels: np.ndarray, eps: float = 1e-4) -> np.ndarray:
        """The variable that renders ``pixels`` (N, size, size, 3; strictly inside 0–255 for an
        exact inverse, clipped to [eps, 1 − eps] of the range otherwise)."""
        p = np.clip(np.asarray(pixels, np.float64) / 255.0, eps, 1.0 - eps)
        rgb = np.log(p / (1.0 - p))  # logit: the inverse sigmoid
        t = rgb @ np.linalg.inv(COLOR_TO_RGB.astype(np.float64)) * LUCID_DIVISOR
        spec = np.fft.rfft2(t.transpose(0, 3, 1, 2)) / self.scale
        return np.stack([spec.real, spec.imag], axis=1).astype(np.float32)
