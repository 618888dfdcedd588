"""Memory-cap search (bsadvisor.memory) with injected allocation limits."""
import itertools
import math

import pytest

from bsadvisor import memory
from bsadvisor.memory import OutOfMemory, parse_size, search_max_batch


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


@pytest.mark.parametrize("text", ["", "abc", "-1GB", "5XB", "0"])
def test_parse_size_bad(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_bytes():
    assert memory.format_bytes(1536) == "1.5 KiB"
