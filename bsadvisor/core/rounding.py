"""Which batch sizes a plan may use: multiples of --round-to, split evenly over devices and micro-batches.

docs/concepts.md §4, "Rounding". No torch here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

# Relative slack for float noise when comparing batch targets.
EPS = 1e-9


@dataclass(frozen=True)
class Rounding:
    """Which batch sizes a plan may use (docs/concepts.md §4, "Rounding").

    One device: multiples of ``round_to``. Data parallel over W = ``world_size`` devices
    that take at most m = ``micro_batch`` examples per step: a batch B needs
    k = ⌈B/(W·m)⌉ accumulation steps, and B must be a multiple of lcm(round_to, W)·k, so

        B = W × k × μ,   μ ≤ m,

    every device gets the same share and every accumulation step the same micro-batch μ
    (B is a multiple of world size × micro-batch). Without ``micro_batch``, k = 1:
    multiples of lcm(round_to, W).
    """

    round_to: int = 1
    world_size: int = 1
    micro_batch: Optional[int] = None

    @property
    def unit(self) -> int:
        return math.lcm(self.round_to, self.world_size)

    def steps(self, b: float) -> int:
        """Accumulation steps k = ⌈b/(W·m)⌉ a batch of ``b`` needs (1 without a micro-batch limit)."""
        if self.micro_batch is None:
            return 1
        return max(1, math.ceil(b / (self.world_size * self.micro_batch) - EPS))

    def allows(self, batch: int) -> bool:
        return batch >= 1 and batch % (self.unit * self.steps(batch)) == 0

    def _band(self, k: int) -> list[int]:
        """The smallest and largest allowed batch needing exactly k steps (empty if none)."""
        wm, u = self.world_size * self.micro_batch, self.unit * k
        lo, hi = (wm * (k - 1)) // u * u + u, wm * k // u * u
        return [lo, hi] if lo <= hi else []

    def nearest(self, b: float) -> int:
        """The allowed batch nearest ``b`` (ties: the smaller)."""
        if self.micro_batch is None:
            return self._nearest_multiple(b)
        kb = self.steps(b)
        options = []
        for k in range(max(1, kb - 1), kb + 2):
            u = self.unit * k
            options += [c for c in [math.floor(b / u) * u, math.ceil(b / u) * u] + self._band(k)
                        if self.allows(c) and self.steps(c) == k]
        if not options:  # round_to/W coarser than the micro-batch limit: fall back to plain multiples
            return self._nearest_multiple(b)
        return min(options, key=lambda c: (abs(c - b), c))

    def _nearest_multiple(self, b: float) -> int:
        """The multiple of ``unit`` (at least ``unit``) nearest ``b``; a tie goes to the smaller.

        Not ``round()``: that sends ties to the even multiple (2.5 → 2 but 3.5 → 4).
        """
        u = self.unit
        low = math.floor(b / u) * u
        return max(u, min((low, low + u), key=lambda c: (abs(c - b), c)))

    def floor(self, b: float) -> int:
        """The largest allowed batch ≤ ``b`` (at least the smallest allowed one)."""
        if self.micro_batch is None:
            return max(self.unit, int(b // self.unit) * self.unit)
        # With k steps the allowed batches are multiples of unit·k up to unit·q·k (q = ⌊W·m/unit⌋) and
        # above W·m·(k−1): none when q = 0, and none for k ≥ W·m/(W·m − unit·q) unless unit divides W·m.
        # Start at the largest k that has any, so the search takes a step or two, not one per k.
        wm, u = self.world_size * self.micro_batch, self.unit
        q = wm // u
        if q == 0:
            return self.nearest(1)
        k_top = self.steps(b) if u * q == wm else min(self.steps(b), (wm - 1) // (wm - u * q))
        for k in range(k_top, 0, -1):
            band = self._band(k)
            if band:
                u = self.unit * k
                top = min(band[1], int(b // u) * u)
                if top >= band[0]:
                    return top
        return self.nearest(1)

    def describe(self) -> str:
        if self.world_size == 1 and self.micro_batch is None:
            return f"multiples of {self.round_to}"
        text = f"multiples of {self.unit} (--round-to {self.round_to}, world size {self.world_size})"
        if self.micro_batch is not None:
            text += (f"; a batch B over {self.world_size} × {self.micro_batch} takes k = ⌈B/{self.world_size * self.micro_batch}⌉ "
                     f"accumulation steps and is a multiple of {self.unit}·k, so every device and step gets the same "
                     f"micro-batch (≤ {self.micro_batch})")
        return text

