"""Transforms applied to the image before the network, sampled per sample and per step.

The third factor of Lucid's objective × parametrisation × transforms. The book applies none; the
lucid style asks for robustness to Lucid's ``standard_transforms`` (``lucid/optvis/transform.py``):
pad 12 (constant 0.5), jitter 8, random scale 0.90–1.10, random rotation −10…10°, jitter 4, and
here a centre crop back to the tile size (Lucid's ``crop_or_pad_to``), so a batch keeps one
static shape whatever each sample drew.

A transform is ``(x, u) → x'`` in ``keras.ops``: pixels (N, H, W, 3) on the 0–255 scale and
``n_random`` uniforms in [0, 1) per sample. The uniforms are drawn on the host, per (seed, filter)
for every step at once (``draw_uniforms``), so a filter's pattern does not depend on which other
filters share its batch, a seed reproduces it, and the compiled loop needs no random state.

Geometric steps (``Pad``, ``Jitter``, ``RandomScale``, ``RandomRotate``, ``CropTo``) are affine
maps of pixel coordinates; a ``Warp`` composes a chain of them into one matrix per sample and
resamples once (bilinear, one ``affine_transform``), which is cheaper and sharper than resampling
after every step. Differences from Lucid, all small: everything outside the original image takes
the pad colour (Lucid fills the corners its rotation uncovers with 0); scaling keeps the canvas and
scales about its centre (Lucid resizes the canvas from its corner, which the jitter that follows
makes a translation); the rotation is bilinear (tfa's default is nearest).

The maco style (``maco_transforms``) asks for robustness to MaCo's random crops and noise
(Fel et al. 2023; Xplique's ``maco_optimisation_step``): per step a square crop, its centre at
0.5 + N(0, 0.15) of the tile on each axis and its side N(box, 0.05) clipped to [0.05, 1], resized
back to the tile (``MacoCrop``); then normal noise N(0, σ) plus uniform noise U(−σ/2, σ/2) on
every pixel (``MacoNoise``), σ = 0.08 of Xplique's (−1, 1) input range, i.e. 10.2 on 0–255. The
mean side ``box`` falls linearly over the run: Xplique's 0.5 → 0.05 are fractions of a 512-px
image seen through a 224-px input; a tile is seen at its own size, so here they are scaled by
512/224 (the same zoom into the image), 1.14 → 0.114 (clipped as above). Differences: one crop per
filter and step (Xplique averages 32 crops of its single image per step; here the batch is many
filters, which keeps a step's cost that of lucid); the noise is a hash of the pixel position and a
per-step uniform (no random state in the compiled loop, the same numbers on every backend).
A transform that draws its per-step values itself (``draw``: crop centres, sides) gets them from
the same seeded generator instead of plain uniforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: Lucid's ``standard_transforms`` choices
LUCID_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))  # 0.90, 0.92, …, 1.10
LUCID_ANGLES = tuple(float(a) for a in list(range(-10, 11)) + 5 * [0])  # degrees; 0 weighted ×6


#: MaCo's crops and noise (Xplique ``maco``; see the module docstring)
MACO_CENTRE_SD = 0.15
MACO_BOX_SD = 0.05
MACO_BOX_RANGE = (0.05, 1.0)
MACO_ZOOM = 512 / 224  # Xplique's default image side / a 224-px model input
MACO_BOX_SCHEDULE = (0.5 * MACO_ZOOM, 0.05 * MACO_ZOOM)  # mean crop side, first → last step
MACO_NOISE = 0.08 * 255.0 / 2.0  # Xplique's noise_intensity on a (−1, 1) range, on 0–255


class Transform(Protocol):
    @property
    def n_random(self) -> int: ...

    def __call__(self, x: Any, u: Any) -> Any:
        """(N, H, W, 3) pixels, (N, n_random) uniforms → transformed pixels."""
        ...


class Geometric(Protocol):
    """One affine step of a ``Warp`` on a square canvas of side ``size``."""

    @property
    def n_random(self) -> int: ...

    def size_after(self, size: int) -> int: ...

    def matrix(self, u: Any, size: int) -> Any:
        """(N, 3, 3): this step's output pixel coordinates (x, y, 1) → its input coordinates."""
        ...


def _translate(n: Any, dx: Any, dy: Any) -> Any:
    from keras import ops

    one, zero = ops.ones((n,)), ops.zeros((n,))
    dx = dx * one
    dy = dy * one
    return ops.stack([ops.stack([one, zero, dx], -1), ops.stack([zero, one, dy], -1),
                      ops.stack([zero, zero, one], -1)], 1)


def _pick(u: Any, choices: Sequence[float]) -> Any:
    """One of ``choices`` per sample, uniformly, from uniforms in [0, 1)."""
    from keras import ops

    idx = ops.clip(ops.cast(ops.floor(u * len(choices)), "int32"), 0, len(choices) - 1)
    return ops.take(ops.convert_to_tensor(np.asarray(choices, np.float32)), idx)


@dataclass(frozen=True)
class Pad:
    """Widen the canvas by ``width`` on each side (filled with the warp's fill colour)."""

    width: int
    n_random: int = 0

    def size_after(self, size: int) -> int:
        return size + 2 * self.width

    def matrix(self, u: Any, size: int) -> Any:
        from keras import ops

        return _translate(ops.shape(u)[0], -float(self.width), -float(self.width))


@dataclass(frozen=True)
class Jitter:
    """A random crop of side ``size − d`` (offsets 0…d on each axis, as Lucid's ``jitter(d)``)."""

    d: int
    n_random: int = 2

    def size_after(self, size: int) -> int:
        if size <= self.d:
            raise ValueError(f"jitter {self.d} needs a canvas wider than {self.d}, got {size}")
        return size - self.d

    def matrix(self, u: Any, size: int) -> Any:
        from keras import ops

        off = ops.clip(ops.floor(u * (self.d + 1)), 0, self.d)
        return _translate(ops.shape(u)[0], off[:, 0], off[:, 1])


@dataclass(frozen=True)
class RandomScale:
    """Scale by one of ``scales`` about the canvas centre (the canvas keeps its size)."""

    scales: tuple[float, ...] = LUCID_SCALES
    n_random: int = 1

    def size_after(self, size: int) -> int:
        return size

    def matrix(self, u: Any, size: int) -> Any:
        from keras import ops

        inv = 1.0 / _pick(u[:, 0], self.scales)
        c = (size - 1) / 2.0
        zero, one = ops.zeros_like(inv), ops.ones_like(inv)
        t = c * (1.0 - inv)
        return ops.stack([ops.stack([inv, zero, t], -1), ops.stack([zero, inv, t], -1),
                          ops.stack([zero, zero, one], -1)], 1)


@dataclass(frozen=True)
class RandomRotate:
    """Rotate by one of ``angles`` (degrees) about the canvas centre."""

    angles: tuple[float, ...] = LUCID_ANGLES
    n_random: int = 1

    def size_after(self, size: int) -> int:
        return size

    def matrix(self, u: Any, size: int) -> Any:
        from keras import ops

        a = _pick(u[:, 0], self.angles) * (math.pi / 180.0)
        cos, sin = ops.cos(a), ops.sin(a)
        c = (size - 1) / 2.0
        zero, one = ops.zeros_like(a), ops.ones_like(a)
        # input = c + R(−a)(output − c)
        tx = c - cos * c - sin * c
        ty = c + sin * c - cos * c
        return ops.stack([ops.stack([cos, sin, tx], -1), ops.stack([-sin, cos, ty], -1),
                          ops.stack([zero, zero, one], -1)], 1)


@dataclass(frozen=True)
class CropTo:
    """Centre crop (or pad) to ``size`` (Lucid's ``crop_or_pad_to``)."""

    size: int
    n_random: int = 0

    def size_after(self, size: int) -> int:
        return self.size

    def matrix(self, u: Any, size: int) -> Any:
        from keras import ops

        off = float((size - self.size) // 2)
        return _translate(ops.shape(u)[0], off, off)


@dataclass(frozen=True)
class Warp:
    """A chain of geometric steps as one resampling. The chain must end at the input size
    (end it with ``CropTo(size)``); ``fill`` (a fraction of the 0–255 range) colours everything
    outside the input image."""

    steps: tuple[Geometric, ...]
    fill: float = 0.5

    @property
    def n_random(self) -> int:
        return sum(s.n_random for s in self.steps)

    def output_size(self, size: int) -> int:
        for s in self.steps:
            size = s.size_after(size)
        return size

    def __call__(self, x: Any, u: Any) -> Any:
        from keras import ops

        return ops.image.affine_transform(x, self.flat_matrix(x, u), interpolation="bilinear",
                                          fill_mode="constant", fill_value=self.fill * 255.0)

    def flat_matrix(self, x: Any, u: Any) -> Any:
        """(N, 8): each sample's composed map, output → input pixel coordinates, in
        ``affine_transform``'s flat form (a JAX backend resamples with it: ``jax_warp``)."""
        from keras import ops

        size = int(x.shape[1])
        if int(x.shape[2]) != size or self.output_size(size) != size:
            raise ValueError(f"a warp maps a square tile onto itself: {self.steps} on {x.shape}")
        m = CropTo(size).matrix(u, size)  # the identity, one per sample
        col = 0
        for s in self.steps:
            m = ops.matmul(m, s.matrix(u[:, col : col + s.n_random], size))
            size = s.size_after(size)
            col += s.n_random
        return ops.concatenate([ops.reshape(m[:, :2, :], (-1, 6)), ops.zeros((ops.shape(m)[0], 2))], 1)


@dataclass(frozen=True)
class MacoCrop:
    """A square crop resized back to the canvas (``tf.image.crop_and_resize``'s sampling); its
    three per-step values (centre x, centre y, side; fractions of the canvas) are drawn on the
    host by ``draw``."""

    schedule: tuple[float, float] = MACO_BOX_SCHEDULE
    n_random: int = 3

    def size_after(self, size: int) -> int:
        return size

    def draw(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """(steps, 3): centres 0.5 + N(0, 0.15), sides N(box_t, 0.05) clipped, box_t linear."""
        centre = 0.5 + rng.normal(0.0, MACO_CENTRE_SD, (steps, 2))
        box = np.linspace(self.schedule[0], self.schedule[1], steps) if steps else np.zeros(0)
        side = np.clip(rng.normal(box, MACO_BOX_SD), *MACO_BOX_RANGE)
        return np.concatenate([centre, side[:, None]], 1).astype(np.float32)

    def matrix(self, u: Any, size: int) -> Any:
        from keras import ops

        side = u[:, 2]
        zero, one = ops.zeros_like(side), ops.ones_like(side)
        last = float(size - 1)
        tx = (u[:, 0] - 0.5 * side) * last
        ty = (u[:, 1] - 0.5 * side) * last
        return ops.stack([ops.stack([side, zero, tx], -1), ops.stack([zero, side, ty], -1),
                          ops.stack([zero, zero, one], -1)], 1)


def _hash_uniform(x: Any, salt: float) -> Any:
    """Pseudo-random uniforms in [0, 1) from positions ``x`` (the shader hash frac(sin·43758))."""
    from keras import ops

    y = ops.sin(x + salt) * 43758.5453
    return y - ops.floor(y)


@dataclass(frozen=True)
class MacoNoise:
    """Normal N(0, σ) plus uniform U(−σ/2, σ/2) noise per pixel and channel (0–255 scale),
    from a hash of the position and one per-step uniform."""

    sigma: float = MACO_NOISE
    n_random: int = 1

    def __call__(self, x: Any, u: Any) -> Any:
        from keras import ops

        h, w = int(x.shape[1]), int(x.shape[2])
        gy, gx, gc = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
        pos = ops.convert_to_tensor((gx * 12.9898 + gy * 78.233 + gc * 37.719).astype(np.float32))
        p = pos[None] + ops.reshape(u[:, 0], (-1, 1, 1, 1)) * 1000.0
        u1 = ops.maximum(_hash_uniform(p, 0.0), 1e-7)
        u2 = _hash_uniform(p, 17.0)
        u3 = _hash_uniform(p, 41.0)
        normal = ops.sqrt(-2.0 * ops.log(u1)) * ops.cos(2.0 * math.pi * u2)  # Box–Muller
        return x + self.sigma * (normal + (u3 - 0.5))


def maco_transforms(size: int) -> tuple[Transform, ...]:
    """MaCo's random crop (one warp, grey outside the tile as Xplique's zero in (−1, 1)), then noise."""
    return (Warp((MacoCrop(),), fill=0.5), MacoNoise())


def lucid_transforms(size: int) -> tuple[Transform, ...]:
    """Lucid's ``standard_transforms``, then a centre crop back to ``size``, as one warp."""
    return (
        Warp((Pad(12), Jitter(8), RandomScale(), RandomRotate(), Jitter(4), CropTo(size)), fill=0.5),
    )


def n_random(transforms: Sequence[Transform]) -> int:
    return sum(t.n_random for t in transforms)


def apply_transforms(transforms: Sequence[Transform], x: Any, u: Any) -> Any:
    """Apply ``transforms`` in order; ``u`` (N, n_random(transforms)) is split between them."""
    col = 0
    for t in transforms:
        x = t(x, u[:, col : col + t.n_random])
        col += t.n_random
    return x


def _draws(t: Any) -> list[Any]:
    """The parts of a transform that draw their own values, or [] when all take uniforms."""
    parts = list(t.steps) if isinstance(t, Warp) else [t]
    return [p for p in parts if hasattr(p, "draw")]


def draw_uniforms(transforms: Sequence[Transform], filter_index: int, steps: int, seed: int) -> np.ndarray:
    """Every step's uniforms for one filter, (steps, n_random), seeded per (seed, filter); a
    part with its own ``draw`` (``MacoCrop``) puts its values in its columns instead."""
    rng = np.random.default_rng([seed, filter_index, 1])
    if not any(_draws(t) for t in transforms):
        return rng.random((steps, n_random(transforms)), dtype=np.float32)
    cols = []
    for t in transforms:
        for part in (t.steps if isinstance(t, Warp) else (t,)):
            draw = getattr(part, "draw", None)
            cols.append(draw(rng, steps) if draw else rng.random((steps, part.n_random), dtype=np.float32))
    return np.concatenate(cols, 1).astype(np.float32) if cols else np.zeros((steps, 0), np.float32)
