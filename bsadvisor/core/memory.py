"""Memory cap search: the largest batch whose whole training step fits.

The search only sees a ``try_batch(b) -> peak_bytes`` callable, which may raise an
out-of-memory error (``torch.OutOfMemoryError``, ``MemoryError`` or
:class:`OutOfMemory`, which may carry the peak it measured). Peak memory of a training
step is close to linear in the batch: ``peak ≈ fixed + per_sample · b``. So:

1. two small trials fit the line;
2. jump to the batch the line predicts for the limit (aimed slightly low);
3. refine with the secant through the two nearest fitting trials, or, after a
   failure, interpolate between the last fit and the failure (regula falsi), and
   bisect only when a failure gives no peak to interpolate with.

On smooth costs this lands within a few percent of the boundary in 3–4 trials, where
power/binary search (Lightning's ``scale_batch_size``) needs about 10. Never exceeds
``max_batch`` (the dataset size).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
         "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


class OutOfMemory(Exception):
    """A trial did not fit. ``peak_bytes``: what it needed, if known."""

    def __init__(self, message: str = "out of memory", peak_bytes: Optional[float] = None):
        super().__init__(message)
        self.peak_bytes = peak_bytes


# What allocators say when they run out (torch raises a plain RuntimeError for the CPU
# allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes").
_OOM_MESSAGES = ("can't allocate memory", "cannot allocate memory", "out of memory")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means "this batch does not fit": torch's CUDA OutOfMemoryError, Python's
    MemoryError, :class:`OutOfMemory`, or the RuntimeError of torch's CPU allocator."""
    if isinstance(exc, (OutOfMemory, MemoryError)):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(m in text for m in _OOM_MESSAGES)
    return False


MAX_SIZE = 2**63  # bytes; more than any machine has (and more than an int64 counter holds)

# The search aims below the limit less a 10% safety margin: the CPU count misses transient
# buffers of backward, and a CUDA step near the limit fragments the allocator's cache.
USABLE_FRACTION = 0.9


def usable_bytes(limit_bytes: float) -> float:
    """What the search may fill of ``limit_bytes`` (the limit less the safety margin)."""
    return USABLE_FRACTION * limit_bytes


def headroom(peak_bytes: float, limit_bytes: float) -> float:
    """Fraction of ``limit_bytes`` a step that peaks at ``peak_bytes`` leaves free (0 without a limit)."""
    return 1.0 - peak_bytes / limit_bytes if limit_bytes > 0 else 0.0


def parse_size(text: str) -> int:
    """'8GiB', '500MB', '1.5g', '1024' -> bytes (at least 1). Raises ValueError with a clear message.

    NaN, infinity, values below one byte (``0.5B`` would round to 0, which means "no limit"
    elsewhere) and values above 2**63 bytes are refused.
    """
    s = str(text).strip().lower().replace(" ", "")
    i = len(s)
    while i > 0 and s[i - 1].isalpha():
        i -= 1
    num, unit = s[:i], s[i:]
    if unit not in UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r}; use e.g. 8GiB, 500MB, 2G")
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"cannot read a size from {text!r}; use e.g. 8GiB, 500MB, 2G") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    size = value * UNITS[unit]
    if not math.isfinite(size) or size >= MAX_SIZE:
        raise ValueError(f"size {text!r} is larger than any machine's memory; use e.g. 8GiB")
    if size < 1:
        raise ValueError(f"size {text!r} is below one byte; use e.g. 8GiB, 500MB")
    return int(size)


def format_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@dataclass
class MemorySearch:
    max_batch: int            # largest batch confirmed to fit (0: not even the smallest)
    peak_bytes: float         # its measured peak
    fixed_bytes: float        # fitted intercept
    bytes_per_sample: float   # fitted slope
    limit_bytes: float
    trials: int
    limited_by: str           # "memory", "dataset", "trials", "budget"
    history: list = field(default_factory=list)  # (batch, peak or None if OOM)

    @property
    def headroom(self) -> float:
        """Fraction of the search's limit left free at max_batch."""
        return headroom(self.peak_bytes, self.limit_bytes)


def _fit(p1: tuple[int, float], p2: tuple[int, float]) -> tuple[float, float]:
    (b1, y1), (b2, y2) = sorted([p1, p2])
    slope = (y2 - y1) / (b2 - b1) if b2 != b1 else y2 / max(b2, 1)
    slope = max(slope, 1e-9)
    return y1 - slope * b1, slope


def search_max_batch(try_batch: Callable[[int], float], limit_bytes: float, max_batch: int,
                     first: Optional[int] = None, max_trials: int = 8, tol: float = 0.02,
                     aim: float = 0.97, out_of_time: Optional[Callable[[], bool]] = None) -> MemorySearch:
    """Largest b ≤ max_batch with try_batch(b) ≤ limit_bytes (and no OOM).

    ``tol``: stop when the bracket [fit, fail) is within this fraction. ``aim``: the
    fraction of the remaining bytes an extrapolation aims at, so the jump lands just
    below the limit and the next secant step is short. ``out_of_time()``: asked before
    every trial after the first; when it says True the search stops with what it has
    (``limited_by == "budget"``).
    """
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    trials = _Trials(try_batch, limit_bytes, max_trials, out_of_time)
    if not _start(trials, max(1, min(first if first else 1, max_batch)), max_batch):
        return MemorySearch(0, 0.0, 0.0, 0.0, limit_bytes, len(trials.history),
                            "budget" if trials.stopped else "memory", trials.history)
    while True:
        batch = _next_batch(trials, max_batch, tol, aim)
        if batch is None:
            break
        trials.trial(batch)
    ok = trials.ok
    fixed, slope = _fit(ok[0], ok[-1]) if len(ok) >= 2 else (0.0, ok[0][1] / ok[0][0])
    largest, peak = ok[-1]
    return MemorySearch(max_batch=largest, peak_bytes=peak, fixed_bytes=max(fixed, 0.0), bytes_per_sample=slope,
                        limit_bytes=float(limit_bytes), trials=len(trials.history),
                        limited_by=_limited_by(trials, max_batch, tol), history=trials.history)


class _Trials:
    """The trials so far: the fitting ones (batch, peak), sorted by batch, and the smallest failure."""

    def __init__(self, try_batch: Callable[[int], float], limit_bytes: float, max_trials: int,
                 out_of_time: Optional[Callable[[], bool]]):
        self.try_batch, self.limit_bytes = try_batch, limit_bytes
        self.max_trials, self.out_of_time = max_trials, out_of_time
        self.history: list[tuple[int, Optional[float]]] = []  # (batch, peak or None if OOM)
        self.ok: list[tuple[int, float]] = []
        self.fail: Optional[tuple[int, Optional[float]]] = None  # smallest failing batch, with its peak if known
        self.stopped = False  # out_of_time() said so

    def more(self) -> bool:
        """Whether another trial may run (asks ``out_of_time``, and remembers a stop)."""
        if len(self.history) >= self.max_trials:
            return False
        if self.out_of_time is not None and self.out_of_time():
            self.stopped = True
            return False
        return True

    def trial(self, batch: int) -> bool:
        """Run ``try_batch(batch)``; whether it fits."""
        try:
            peak = float(self.try_batch(batch))
        except Exception as exc:
            if not is_oom(exc):
                raise
            peak = getattr(exc, "peak_bytes", None)
            self.history.append((batch, peak))
            self._failed(batch, peak)
            return False
        self.history.append((batch, peak))
        if peak > self.limit_bytes:
            self._failed(batch, peak)
            return False
        self.ok.append((batch, peak))
        self.ok.sort()
        return True

    def _failed(self, batch: int, peak: Optional[float]) -> None:
        if self.fail is None or batch < self.fail[0]:
            self.fail = (batch, peak)

    def closed(self, tol: float) -> bool:
        """Whether the bracket [largest fit, smallest failure) is within ``tol`` (or one batch)."""
        return self.fail is not None and self.fail[0] - self.ok[-1][0] <= max(1, tol * self.fail[0])


def _start(trials: _Trials, first: int, max_batch: int) -> bool:
    """The two small trials, ``first`` and 16·``first`` (far enough apart to see the slope).

    When ``first`` does not fit, bisect downwards to 1 first. False: nothing fits.
    """
    if not trials.trial(first):
        while trials.fail[0] > 1 and trials.more():
            if trials.trial(max(1, trials.fail[0] // 4)):
                break
        if not trials.ok:
            return False
    ok = trials.ok
    if len(ok) == 1 and ok[0][0] < max_batch and trials.more():
        second = min(max_batch, max(ok[0][0] + 1, 16 * ok[0][0]))
        if trials.fail is not None:
            second = min(second, (ok[0][0] + trials.fail[0]) // 2)
        if second > ok[0][0]:
            trials.trial(second)
    return True


def _next_batch(trials: _Trials, max_batch: int, tol: float, aim: float) -> Optional[int]:
    """The batch the line through the fits predicts for the limit; None when the search is done.

    Without a failure: the secant through the two largest fits, aimed at ``aim`` of the
    bytes left (a long first jump aims lower; a short refinement closer). After a failure
    with a known peak: regula falsi between the largest fit and the failure. After one
    without: the line if it lands inside the bracket, else most of the way to the failure
    (a failed jump usually overshot by a little).
    """
    ok, fail, limit = trials.ok, trials.fail, trials.limit_bytes
    largest, peak = ok[-1]
    if largest >= max_batch or trials.closed(tol) or not trials.more():
        return None
    slope = _fit(ok[-2], ok[-1])[1] if len(ok) >= 2 else ok[0][1] / ok[0][0]
    near = len(ok) >= 3 or (len(ok) == 2 and fail is not None)
    share = 0.995 if near else aim
    if fail is None:
        batch = largest + math.floor(share * (limit - peak) / slope)
    elif fail[1] is not None and fail[1] > peak:
        fraction = (limit - peak) / (fail[1] - peak)
        batch = largest + math.floor(0.995 * fraction * (fail[0] - largest))
    else:
        line = largest + math.floor(share * (limit - peak) / slope)
        batch = line if largest < line < fail[0] else largest + math.floor(0.97 * (fail[0] - largest))
    if fail is not None:
        batch = min(batch, fail[0] - 1)
    batch = min(batch, max_batch)
    if batch <= largest:
        return None
    if fail is None and batch < max_batch and (batch - largest) <= tol * batch and len(ok) >= 2:
        return None  # the next fit would gain less than tol
    return batch


def _limited_by(trials: _Trials, max_batch: int, tol: float) -> str:
    """What stopped the search: "dataset", "memory", "budget" or "trials"."""
    if trials.ok[-1][0] >= max_batch:
        return "dataset"
    if trials.closed(tol):
        return "memory"
    if trials.stopped:
        return "budget"
    return "memory" if trials.fail is not None or len(trials.history) < trials.max_trials else "trials"
