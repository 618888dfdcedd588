"""SGD noise temperature and its inverses (pure Python, no torch).

Smith & Le (1710.06451) and Smith et al. (1711.00489, eq. 1):

    g = ε/(1−m) · (N/B − 1)      exact, sampling without replacement   (rule="exact")
    g ≈ ε·N / (B·(1−m))          when B ≪ N, the paper's form           (rule="proportional")

For Adam-family optimizers (docs/concepts.md §7, eqs. 24–26) no rule is established; four
are offered. Adam divides each coordinate by √v, v ≈ G² + σ²/B, so it acts like SGD at an
LR ∝ η/√(G² + σ²/B) and its temperature is

    T_Adam ∝ η · √( v(B) / (1 + B/B_noise) )       (adam_rule="noise", eq. 24)

with B_noise = σ²/G² (McCandlish et al.'s noise scale) read from the plan's noise model at
each sample s. Its limits are the other two rules: B ≪ B_noise gives Malladi et al.'s
square-root rule T ∝ η·√v(B) (adam_rule="sqrt"), B ≫ B_noise the linear rule T ∝ η·v(B)
(adam_rule="linear", as Smith et al. used for Adam). "seesaw" (Meterez et al.
2510.14717) keeps the square-root temperature but grows the batch by α where the LR would
decay by α, and divides the LR by √α. Adam's β1 does not enter T.

Single-pass training (streaming, or one epoch or less) draws every example fresh, so the
finite-data factor goes: with N → ∞, g ∝ ε/((1−m)·B) (docs/concepts.md eq. 15); a model
with ``dataset_size=None`` uses that form (up to the constant N, which cancels in every ratio).

A TemperatureModel answers three questions: the temperature of (lr, m, B); the batch
that gives a temperature at (lr, m); and the LR that gives it at (m, B).
"""
from __future__ import annotations

import math
import bisect
from dataclasses import dataclass
from typing import Optional

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError

from bsadvisor.core.defaults import ADAM_FAMILY, ADAM_RULES, DEFAULTS, OPTIMIZERS, RULES


def temperature(lr: float, batch_size: float, dataset_size: int, momentum: float = 0.0,
                rule: str = "exact") -> float:
    """SGD noise temperature g = ε/(1−m)·(N/B − 1) (exact) or ε·N/(B(1−m)) (proportional).

    ``lr`` ≥ 0, 1 ≤ ``batch_size`` ≤ ``dataset_size`` (None: the N → ∞ form), 0 ≤ ``momentum`` < 1;
    anything else is a ValueError (or a TypeError for a value that is not a number).
    """
    lr = checks.number("lr", lr, low=0)
    momentum = checks.number("momentum", momentum, low=0, high=1, high_open=True)
    batch_size = checks.number("batch_size", batch_size, low=1)
    if dataset_size is not None:
        dataset_size = checks.positive_int("dataset_size", dataset_size)
        if batch_size > dataset_size:
            raise UserError(f"batch_size {batch_size:g} is larger than dataset_size {dataset_size}",
                            parameters=("batch_size", "dataset_size"))
    g = TemperatureModel(dataset_size, rule).temperature(lr, momentum, batch_size)
    if not math.isfinite(g):
        raise UserError(f"the temperature of lr {lr:g}, momentum {momentum:g} and batch_size {batch_size:g} is too large "
                        "for a float; check lr", parameter="lr")
    return g


def noise_proxy_rule(adam_rule: str) -> str:
    """The Adam rule B_noise(s) is scaled with (eq. 16): the noise rule's variance-dominated limit, the
    square-root rule (the noise model must not depend on itself); every other rule is its own."""
    return "sqrt" if adam_rule == "noise" else adam_rule


@dataclass(frozen=True)
class TemperatureModel:
    dataset_size: Optional[int]  # None: the N → ∞ (streaming) form
    rule: str = "exact"
    optimizer: str = "sgd"
    adam_rule: str = DEFAULTS["adam_rule"]
    #: adam_rule="noise": B_noise(s) as a step function, (sample positions, values), each value holding
    #: from its position to the next one (convert reads it from the noise model along the original run).
    b_noise: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None

    def __post_init__(self) -> None:
        checks.choice("rule", self.rule, RULES)
        checks.choice("optimizer", self.optimizer, OPTIMIZERS)
        checks.choice("adam_rule", self.adam_rule, ADAM_RULES)
        if self.uses_noise_scale:
            starts, values = self.b_noise or ((), ())
            if not starts or len(starts) != len(values) or not all(v > 0 for v in values):
                raise ValueError("adam_rule 'noise' needs b_noise: sample positions and positive noise scales")

    @property
    def is_adam(self) -> bool:
        return self.optimizer in ADAM_FAMILY

    @property
    def uses_noise_scale(self) -> bool:
        """Whether the temperature reads B_noise(s) (the noise-aware Adam rule, eq. 24)."""
        return self.is_adam and self.adam_rule == "noise"

    @property
    def power(self) -> float:
        """Exponent p in T ∝ lr · v(B)^p: 1 for SGD and Adam's linear rule, ½ for the sqrt, seesaw and noise
        rules (the noise rule also divides v by 1 + B/B_noise, eq. 24)."""
        return 0.5 if self.is_adam and self.adam_rule in ("sqrt", "seesaw", "noise") else 1.0

    @property
    def proxy(self) -> "TemperatureModel":
        """The model B_noise(s) is scaled with (eq. 16, ``noise_proxy_rule``)."""
        if not self.uses_noise_scale:
            return self
        return TemperatureModel(self.dataset_size, self.rule, self.optimizer, noise_proxy_rule(self.adam_rule))

    @classmethod
    def of(cls, options, adam_rule: Optional[str] = None,
           b_noise: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None) -> "TemperatureModel":
        """The model of a conversion's options (a core.options.ConvertOptions): the N → ∞ form for one pass or
        less (eq. 15); ``adam_rule`` in place of theirs where given (the noise rule's proxy), ``b_noise`` the
        noise rule's B_noise(s) steps."""
        return cls(None if options.single_pass else options.dataset_size, options.rule, options.optimizer,
                   options.adam_rule if adam_rule is None else adam_rule, b_noise)

    def noise_scale_at(self, sample: float) -> float:
        """B_noise at ``sample`` (the step function's value there; inf for a model without one)."""
        if not self.uses_noise_scale:
            return math.inf
        starts, values = self.b_noise
        return values[max(0, bisect.bisect_right(starts, sample) - 1)]

    def _signal_factor(self, batch_size: float, sample: float) -> float:
        """1 + B/B_noise(s) under the noise rule (eq. 24), else 1."""
        return 1.0 + batch_size / self.noise_scale_at(sample) if self.uses_noise_scale else 1.0

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

    def _batch_term(self, batch_size: float, sample: float) -> float:
        """What the batch contributes to T: v(B)^p, divided by (1 + B/B_noise(s))^½ under the noise rule."""
        return (self.noise_factor(batch_size) / self._signal_factor(batch_size, sample)) ** self.power

    def temperature(self, lr: float, momentum: float, batch_size: float, sample: float = 0.0) -> float:
        """T of (lr, momentum, batch) at ``sample`` (the sample matters only to the noise rule)."""
        return lr * self._momentum_term(momentum) * self._batch_term(batch_size, sample)

    def batch_for(self, g: float, lr: float, momentum: float, sample: float = 0.0) -> float:
        """The (unrounded) batch whose temperature at (lr, momentum) is g (at ``sample`` for the noise rule)."""
        if g <= 0:
            return self._batch_for_noise_factor(0.0)
        v = (g / (lr * self._momentum_term(momentum))) ** (1.0 / self.power)
        if not self.uses_noise_scale:
            return self._batch_for_noise_factor(v)
        # v(B) / (1 + B/B_noise) = v with v(B) = n/B − a (n = N, or 1 for the N → ∞ form) is the quadratic
        # (v/B_noise)·B² + (a + v)·B − n = 0; its positive root, in the form without cancellation:
        n, a = (1.0, 0.0) if self.dataset_size is None else (
            float(self.dataset_size), 1.0 if self.rule == "exact" else 0.0)
        c = v / self.noise_scale_at(sample)
        return 2.0 * n / ((a + v) + math.sqrt((a + v) ** 2 + 4.0 * c * n))

    def scale_for(self, batch_size: float, base_batch: float, momentum: float = 0.0,
                  base_momentum: Optional[float] = None, sample: float = 0.0) -> float:
        """The LR factor f that keeps the temperature when (B0, m0) becomes (B, m): T(f·ε, m, B) = T(ε, m0, B0).

        It is the stage's ``lr_scale`` (docs/concepts.md eq. 14): the LR a stage trains with is
        f × the original's LR at the same sample (``sample``: where, for the noise rule).
        """
        m0 = momentum if base_momentum is None else base_momentum
        denom = self._momentum_term(momentum) * self._batch_term(batch_size, sample)
        if denom <= 0:  # B = N: no gradient noise, no LR gives a temperature
            return math.inf
        return self._momentum_term(m0) * self._batch_term(base_batch, sample) / denom

    def describe(self) -> str:
        if self.is_adam:
            return self._describe_adam() + self._v_words()
        if self.streaming:
            return "streaming (one pass or less): g ∝ ε/((1−m)·B) with N → ∞, B(t) = B0/ρ(t)"
        if self.rule == "exact":
            return "exact rule: g = ε/(1−m)·(N/B − 1), B(t) = N / (1 + (N/B0 − 1)·ρ(t))"
        return "proportional rule (Smith et al.): g ≈ εN/(B(1−m)), B(t) = B0/ρ(t)"

    def _v_words(self) -> str:
        """Which v(B) an Adam rule reads: --rule picks the finite-data form (it is not ignored under Adam)."""
        if self.streaming:
            return "" if self.adam_rule == "sqrt" else "; v(B) = 1/B (one pass: N → ∞)"
        return "; v(B) = N/B − 1 (--rule exact)" if self.rule == "exact" else "; v(B) = N/B (--rule proportional)"

    def _describe_adam(self) -> str:
        """The Adam rule's words (eqs. 24–26)."""
        if self.adam_rule == "noise":
            return ("noise-aware rule for Adam: T ∝ η·√(v(B)/(1 + B/B_noise(s))), the square-root rule below the "
                    "noise scale and the linear rule above it, B_noise(s) from the plan's noise model")
        if self.adam_rule == "seesaw":
            return ("Seesaw rule for Adam (Meterez et al. 2510.14717): the square-root temperature T ∝ η·√v(B), "
                    "a decay of η by α becomes batch × α with the LR ÷ √α")
        if self.adam_rule == "sqrt":
            return ("square-root rule for Adam (Malladi et al. 2205.10287): T ∝ η·√v(B), so a decay of η by α "
                    "becomes B × α²" + (" (streaming: v(B) = 1/B)" if self.streaming else ""))
        return "linear rule for Adam (as Smith et al. 1711.00489 used): T ∝ η·v(B), a decay of η by α becomes B × α"
