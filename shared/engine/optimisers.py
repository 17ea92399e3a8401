"""How an ascent step moves the variable (``keras.ops``; per element, so samples stay independent).

- ``RmsStep``: the book's ``x += step_size · g / (rms(g) + 1e-5)``, the RMS per sample;
- ``Adam``: as TensorFlow 1's ``AdamOptimizer`` that Lucid's ``render_vis`` uses (β₁ 0.9,
  β₂ 0.999, ε 1e-8, bias-corrected step size), ascending; the learning rate is the style's step
  size (0.05 for lucid);
- ``Nadam``: as PyTorch's ``NAdam`` that Horama's MaCo uses with learning rate 1.0 (Dozat's
  schedule μ_t = β₁(1 − ½·0.96^(0.004·t)); β₁ 0.9, β₂ 0.999, ε 1e-7 as Keras), ascending.
  ``momentum_decay=1`` is Keras 3's ``Nadam`` (Xplique's), checked to 1e-6.

``init(v)`` gives the state (a tuple of tensors shaped like ``v``); ``update(v, g, state, t, lr)``
returns ``(v', state')`` for step ``t`` (0-based).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from convatlas.shared.engine.objectives import rms_normalize


class Optimiser(Protocol):
    def init(self, v: Any) -> tuple[Any, ...]: ...

    def update(self, v: Any, g: Any, state: tuple[Any, ...], t: Any, lr: Any) -> tuple[Any, tuple[Any, ...]]: ...


@dataclass(frozen=True)
class RmsStep:
    def init(self, v: Any) -> tuple[Any, ...]:
        return ()

    def update(self, v: Any, g: Any, state: tuple[Any, ...], t: Any, lr: Any) -> tuple[Any, tuple[Any, ...]]:
        return v + rms_normalize(g) * lr, state


@dataclass(frozen=True)
class Adam:
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8

    def init(self, v: Any) -> tuple[Any, ...]:
        from keras import ops

        return ops.zeros_like(v), ops.zeros_like(v)

    def update(self, v: Any, g: Any, state: tuple[Any, ...], t: Any, lr: Any) -> tuple[Any, tuple[Any, ...]]:
        from keras import ops

        m, s = state
        m = self.beta_1 * m + (1.0 - self.beta_1) * g
        s = self.beta_2 * s + (1.0 - self.beta_2) * ops.square(g)
        n = ops.cast(t, "float32") + 1.0
        lr_t = lr * ops.sqrt(1.0 - ops.power(self.beta_2, n)) / (1.0 - ops.power(self.beta_1, n))
        return v + lr_t * m / (ops.sqrt(s) + self.epsilon), (m, s)


@dataclass(frozen=True)
class Nadam:
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    momentum_decay: float = 0.004

    def init(self, v: Any) -> tuple[Any, ...]:
        from keras import ops

        return ops.zeros_like(v), ops.zeros_like(v), ops.ones(())  # m, s, ∏ μ_t so far

    def update(self, v: Any, g: Any, state: tuple[Any, ...], t: Any, lr: Any) -> tuple[Any, tuple[Any, ...]]:
        from keras import ops

        m, s, mu_prod = state
        n = ops.cast(t, "float32") + 1.0
        mu_t = self.beta_1 * (1.0 - 0.5 * ops.power(0.96, n * self.momentum_decay))
        mu_next = self.beta_1 * (1.0 - 0.5 * ops.power(0.96, (n + 1.0) * self.momentum_decay))
        mu_prod = mu_prod * mu_t
        m = self.beta_1 * m + (1.0 - self.beta_1) * g
        s = self.beta_2 * s + (1.0 - self.beta_2) * ops.square(g)
        m_hat = mu_next * m / (1.0 - mu_prod * mu_next) + (1.0 - mu_t) * g / (1.0 - mu_prod)
        s_hat = s / (1.0 - ops.power(self.beta_2, n))
        return v + lr * m_hat / (ops.sqrt(s_hat) + self.epsilon), (m, s, mu_prod)
