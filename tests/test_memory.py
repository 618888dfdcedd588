"""Memory-cap search (bsadvisor.core.memory) with injected allocation limits."""
import itertools
import math

import pytest

from bsadvisor.core import memory
from bsadvisor.core.memory import OutOfMemory, parse_size, search_max_batch


def true_boundary(cost, limit):
    lo, hi = 0, 1
    while cost(hi) <= limit:
        hi *= 2
    while hi - lo > 1:
        m = (lo + hi) // 2
        lo, hi = (m, hi) if cost(m) <= limit else (lo, m)
    return lo


def make_cost(fixed, per_sample, frac, power, limit):
    """fixed + a·b + c·b^p (c such that the nonlinear part is `frac` of the per-sample bytes near the
    boundary), rounded up to 2 MiB blocks like a caching allocator."""
    scale = (limit - fixed) / per_sample
    c = frac * per_sample * scale / scale ** power
    return lambda b: math.ceil((fixed + per_sample * b + c * b ** power) / 2 ** 21) * 2 ** 21


CASES = list(itertools.product([1e8, 1e9], [1e5, 1e6], [0.0, 0.05, 0.15], [1.1, 1.3], [4e9, 16e9]))


@pytest.mark.parametrize("with_peak", [True, False])
def test_lands_within_5_percent(with_peak):
    worst_trials = 0
    for fixed, a, frac, p, limit in CASES:
        cost = make_cost(fixed, a, frac, p, limit)
        truth = true_boundary(cost, limit)
        calls = []

        def try_batch(b):
            calls.append(b)
            v = cost(b)
            if v > limit:  # the hidden boundary
                if with_peak:
                    raise OutOfMemory("no room", peak_bytes=v)
                raise MemoryError("no room")
            return v

        res = search_max_batch(try_batch, limit, max_batch=10**9, first=16, max_trials=4 if with_peak else 8)
        assert 0.95 * truth <= res.max_batch <= truth, (fixed, a, frac, p, limit, truth, res.history)
        assert res.trials == len(calls)
        assert cost(res.max_batch) == res.peak_bytes <= limit
        worst_trials = max(worst_trials, res.trials)
    assert worst_trials <= (4 if with_peak else 8)


def test_linear_cost_fit_is_exact():
    res = search_max_batch(lambda b: 5000.0 + 300.0 * b, 1e6, max_batch=10**6, first=8)
    assert res.fixed_bytes == pytest.approx(5000.0)
    assert res.bytes_per_sample == pytest.approx(300.0)
    assert res.max_batch <= (1e6 - 5000) / 300 and res.max_batch >= 0.95 * (1e6 - 5000) / 300
    assert 0 <= res.headroom < 0.05


def test_never_exceeds_dataset():
    seen = []
    res = search_max_batch(lambda b: seen.append(b) or 100.0 * b, 1e12, max_batch=1000, first=32)
    assert res.max_batch == 1000 and res.limited_by == "dataset"
    assert max(seen) <= 1000


def test_smallest_batch_does_not_fit():
    res = search_max_batch(lambda b: 1e9 * b, 1.5e9, max_batch=100, first=16)
    assert res.max_batch == 1


def test_other_errors_propagate():
    def boom(b):
        raise RuntimeError("user bug")

    with pytest.raises(RuntimeError):
        search_max_batch(boom, 1e9, max_batch=100)


@pytest.mark.parametrize("text,value", [("8GiB", 8 * 1024**3), ("500MB", 500 * 10**6), ("1.5g", 1_500_000_000),
                                        ("1024", 1024), ("2 MiB", 2 * 1024**2)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-1GB", "5XB", "0", "0.5B", "0.9", "1e-9KB", "nan", "inf", "1e400",
                                  "1e30TB", "9" * 5000, "-0"])
def test_parse_size_bad(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_bytes():
    assert memory.format_bytes(1536) == "1.5 KiB"


def test_parse_size_smallest_and_largest():
    assert parse_size("1B") == 1 and parse_size("1.5B") == 1
    assert parse_size("8TB") == 8 * 1000**4
    with pytest.raises(ValueError, match="below one byte"):
        parse_size("0.5B")  # would be 0, which means "no limit"
    with pytest.raises(ValueError, match="larger than any"):
        parse_size(str(2**63))


@pytest.mark.parametrize("exc, oom", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 12345 bytes. Error code 12 (Cannot allocate memory)"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
    (MemoryError(), True), (OutOfMemory(), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False), (ValueError("out of memory"), False)])
def test_is_oom(exc, oom):
    assert memory.is_oom(exc) is oom


def test_cpu_allocator_error_is_does_not_fit():
    def cost(b):
        if b > 500:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes.")
        return 100.0 * b

    res = search_max_batch(cost, 1e12, max_batch=10**6, first=32)
    assert 0.95 * 500 <= res.max_batch <= 500 and res.limited_by == "memory"


def test_out_of_time_stops_the_search():
    seen = []
    res = search_max_batch(lambda b: seen.append(b) or 100.0 * b, 1e9, max_batch=10**9, first=32,
                           out_of_time=lambda: len(seen) >= 2)
    assert seen == [32, 512] and res.max_batch == 512 and res.limited_by == "budget"
    res = search_max_batch(lambda b: 100.0 * b, 1e9, max_batch=10**9, first=32, out_of_time=lambda: True)
    assert res.trials == 1 and res.max_batch == 32 and res.limited_by == "budget"
