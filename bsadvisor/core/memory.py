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
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(m in text for m in _OOM_MESSAGES)
    return False


MAX_SIZE = 2**63  # bytes; more than any machine has (and more than an int64 counter holds)


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
        """Fraction of the limit left free at max_batch."""
        return 1.0 - self.peak_bytes / self.limit_bytes if self.limit_bytes > 0 else 0.0


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
    stopped = False

    def more(n_trials: int) -> bool:
        nonlocal stopped
        if n_trials >= max_trials:
            return False
        if out_of_time is not None and out_of_time():
            stopped = True
            return False
        return True

    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    history: list[tuple[int, Optional[float]]] = []
    ok: list[tuple[int, float]] = []       # fitting trials (batch, peak), sorted by batch
    fail: Optional[tuple[int, Optional[float]]] = None  # smallest failing batch, with peak if known

    def trial(b: int) -> bool:
        nonlocal fail
        try:
            peak = float(try_batch(b))
        except Exception as exc:
            if not is_oom(exc):
                raise
            peak = getattr(exc, "peak_bytes", None)
            history.append((b, peak))
            if fail is None or b < fail[0]:
                fail = (b, peak)
            return False
        history.append((b, peak))
        if peak > limit_bytes:
            if fail is None or b < fail[0]:
                fail = (b, peak)
            return False
        ok.append((b, peak))
        ok.sort()
        return True

    b1 = max(1, min(first if first else 1, max_batch))
    # The two small trials: b1 and 16·b1 (far enough apart to see the slope).
    if not trial(b1):
        # Not even the smallest batch fits: bisect downwards to 1.
        while fail[0] > 1 and more(len(history)):
            if trial(max(1, fail[0] // 4)):
                break
        if not ok:
            return MemorySearch(0, 0.0, 0.0, 0.0, limit_bytes, len(history), "budget" if stopped else "memory",
                                history)
    if len(ok) == 1 and ok[0][0] < max_batch and more(len(history)):
        b2 = min(max_batch, max(ok[0][0] + 1, 16 * ok[0][0]))
        if fail is not None:
            b2 = min(b2, (ok[0][0] + fail[0]) // 2)
        if b2 > ok[0][0]:
            trial(b2)
    fixed, slope = _fit(ok[0], ok[-1]) if len(ok) >= 2 else (0.0, ok[0][1] / ok[0][0])

    while True:
        lo_b, lo_p = ok[-1]
        if lo_b >= max_batch:
            break
        if fail is not None and fail[0] - lo_b <= max(1, tol * fail[0]):
            break
        if not more(len(history)):
            break
        # Secant through the two largest fitting trials.
        if len(ok) >= 2:
            _, s_ = _fit(ok[-2], ok[-1])
        else:
            s_ = slope
        near = len(ok) >= 3 or (len(ok) == 2 and fail is not None)
        a = 0.995 if near else aim  # a long first jump aims lower; a short refinement closer
        if fail is None:
            cand = lo_b + math.floor(a * (limit_bytes - lo_p) / s_)
        elif fail[1] is not None and fail[1] > lo_p:
            # Regula falsi between the last fit and the failure (peak known).
            frac = (limit_bytes - lo_p) / (fail[1] - lo_p)
            cand = lo_b + math.floor(0.995 * frac * (fail[0] - lo_b))
        else:
            # Failure without a peak: trust the line if it lands inside the bracket,
            # else step most of the way (a failed jump usually overshot by a little).
            ext = lo_b + math.floor(a * (limit_bytes - lo_p) / s_)
            cand = ext if lo_b < ext < fail[0] else lo_b + math.floor(0.97 * (fail[0] - lo_b))
        if fail is not None:
            cand = min(cand, fail[0] - 1)
        cand = min(cand, max_batch)
        if cand <= lo_b:
            break
        if fail is None and cand < max_batch and (cand - lo_b) <= tol * cand and len(ok) >= 2:
            break  # the next fit would gain less than tol
        trial(cand)
    if len(ok) >= 2:
        fixed, slope = _fit(ok[0], ok[-1])
    lo_b, lo_p = ok[-1]
    if lo_b >= max_batch:
        limited_by = "dataset"
    elif fail is not None and fail[0] - lo_b <= max(1, tol * fail[0]):
        limited_by = "memory"
    elif stopped:
        limited_by = "budget"
    else:
        limited_by = "memory" if fail is not None or len(history) < max_trials else "trials"
    return MemorySearch(max_batch=lo_b, peak_bytes=lo_p, fixed_bytes=max(fixed, 0.0), bytes_per_sample=slope,
                        limit_bytes=float(limit_bytes), trials=len(history), limited_by=limited_by, history=history)
