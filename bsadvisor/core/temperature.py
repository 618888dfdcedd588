"""SGD noise temperature and its inverses (pure Python, no torch).

Smith & Le (1710.06451) and Smith et al. (1711.00489, eq. 1):

    g = ε/(1−m) · (N/B − 1)      exact, sampling without replacement   (rule="exact")
    g ≈ ε·N / (B·(1−m))          when B ≪ N, the paper's form           (rule="proportional")

For Adam-family optimizers (Malladi et al. 2205.10287) the square-root rule holds,
T ∝ η·√(N/B − 1) (η ∝ √B keeps T fixed), with Smith et al.'s linear rule T ∝ η/B as
the alternative (adam_rule="linear"). Adam's β1 does not enter T.

Single-pass training (streaming, or one epoch or less) draws every example fresh, so the
finite-data factor goes: with N → ∞, g ∝ ε/((1−m)·B) (docs/concepts.md eq. 15); a model
with ``dataset_size=None`` uses that form (up to the constant N, which cancels in every ratio).

A TemperatureModel answers three questions: the temperature of (lr, m, B); the batch
that gives a temperature at (lr, m); and the LR that gives it at (m, B).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from bsadvisor.core import checks

from bsadvisor.core.defaults import ADAM_FAMILY, ADAM_RULES, OPTIMIZERS, RULES, SGD_FAMILY  # noqa: F401 (re-exported)


def temperature(lr: float, batch_size: float, dataset_size: int, momentum: float = 0.0,
                rule: str = "exact") -> float:
    """SGD noise temperature g = ε/(1−m)·(N/B − 1) (exact) or ε·N/(B(1−m)) (proportional)."""
    return TemperatureModel(dataset_size, rule).temperature(lr, momentum, batch_size)


@dataclass(frozen=True)
class TemperatureModel:
    dataset_size: Optional[int]  # None: the N → ∞ (streaming) form
    rule: str = "exact"
    optimizer: str = "sgd"
    adam_rule: str = "sqrt"

    def __post_init__(self) -> None:
        checks.choice("rule", self.rule, RULES)
        checks.choice("optimizer", self.optimizer, OPTIMIZERS)
        checks.choice("adam_rule", self.adam_rule, ADAM_RULES)

    @property
    def is_adam(self) -> bool:
        return self.optimizer in ADAM_FAMILY

    @property
    def power(self) -> float:
        """Exponent p in T ∝ lr · v(B)^p: 1 for SGD and Adam's linear rule, ½ for the sqrt rule."""
        return 0.5 if self.is_adam and self.adam_rule == "sqrt" else 1.0

    # v(B): the variance factor of a size-B mean gradient, up to a constant (tr Σ / N).
    def noise_factor(self, batch_size: float) -> float:
        n = self.dataset_size
        if n is None:
            return 1.0 / batch_size
        return n / batch_size - 1.0 if self.rule == "exact" else n / batch_size

    @property
    def streaming(self) -> bool:
        return self.dataset_size is None

    def _batch_for_noise_factor(self, v: float) -> float:
        n = self.dataset_size
        if n is None:
            return 1.0 / v if v > 0 else math.inf
        if v <= 0:
            return float(n) if self.rule == "exact" else math.inf
        return n / (1.0 + v) if self.rule == "exact" else n / v

    def _momentum_term(self, momentum: float) -> float:
        # SGD with momentum m takes effective steps ε/(1−m); Adam's β1 averages, it does not amplify.
        return 1.0 if self.is_adam else 1.0 / (1.0 - momentum)

    def temperature(self, lr: float, momentum: float, batch_size: float) -> float:
        return lr * self._momentum_term(momentum) * self.noise_factor(batch_size) ** self.power

    def batch_for(self, g: float, lr: float, momentum: float) -> float:
        """The (unrounded) batch whose temperature at (lr, momentum) is g."""
        if g <= 0:
            return self._batch_for_noise_factor(0.0)
        v = (g / (lr * self._momentum_term(momentum))) ** (1.0 / self.power)
        return self._batch_for_noise_factor(v)

    def lr_for(self, g: float, momentum: float, batch_size: float) -> float:
        """The LR whose temperature at (momentum, batch_size) is g."""
        if g == 0:  # LR 0 gives temperature 0 at any batch, B = N included (where 0/0 would give inf)
            return 0.0
        denom = self._momentum_term(momentum) * self.noise_factor(batch_size) ** self.power
        return g / denom if denom > 0 else math.inf

    def scale_for(self, batch_size: float, base_batch: float, momentum: float = 0.0,
                  base_momentum: Optional[float] = None) -> float:
        """The LR factor f that keeps the temperature when (B0, m0) becomes (B, m): T(f·ε, m, B) = T(ε, m0, B0).

        It is the stage's ``lr_scale`` (docs/concepts.md eq. 14): the LR a stage trains with is
        f × the original's LR at the same sample.
        """
        m0 = momentum if base_momentum is None else base_momentum
        denom = self._momentum_term(momentum) * self.noise_factor(batch_size) ** self.power
        if denom <= 0:  # B = N: no gradient noise, no LR gives a temperature
            return math.inf
        return self._momentum_term(m0) * self.noise_factor(base_batch) ** self.power / denom

    def describe(self) -> str:
        if self.is_adam:
            if self.adam_rule == "sqrt":
                return ("square-root rule for Adam (Malladi et al. 2205.10287): T ∝ η·√v(B), so a decay of η by α "
                        "becomes B × α²" + (" (streaming: v(B) = 1/B)" if self.streaming else ""))
            return "linear rule for Adam (as Smith et al. 1711.00489 used): T ∝ η·v(B), a decay of η by α becomes B × α"
        if self.streaming:
            return "streaming (one pass or less): g ∝ ε/((1−m)·B) with N → ∞, B(t) = B0/ρ(t)"
        if self.rule == "exact":
            return "exact rule: g = ε/(1−m)·(N/B − 1), B(t) = N / (1 + (N/B0 − 1)·ρ(t))"
        return "proportional rule (Smith et al.): g ≈ εN/(B(1−m)), B(t) = B0/ρ(t)"
