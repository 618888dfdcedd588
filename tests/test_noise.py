"""Estimator statistics (bsadvisor.core.noise) against independently simulated truths."""
import math

import numpy as np
import pytest

from bsadvisor.core import noise


def simulate(rng, G, sigma_diag, b, k, draws):
    """Micro-batch means ~ N(G, Σ/b), diagonal Σ: the statistics the probe would see."""
    d = G.size
    micro = G + rng.standard_normal((draws, k, d)) * np.sqrt(sigma_diag / b)
    gb2 = (micro ** 2).sum(-1).mean(-1)
    gB2 = (micro.mean(1) ** 2).sum(-1)
    return gb2, gB2


def test_exact_expectations_recover_truth():
    # E|G_b|² = |G|² + trΣ/b exactly -> eqs. A.1/A.2 give back tr Σ and |G|².
    tr, g2, b, B = 37.0, 2.5, 4, 32
    est = noise.estimate([g2 + tr / b] * 3, [g2 + tr / B] * 3, b, B)
    assert est.trace_sigma == pytest.approx(tr, rel=1e-12)
    assert est.grad_sq_norm == pytest.approx(g2, rel=1e-12)
    assert est.b_simple == pytest.approx(tr / g2, rel=1e-12)


def test_simulated_estimate_close_to_truth():
    rng = np.random.default_rng(0)
    G = rng.standard_normal(50) * 0.3
    sig = rng.uniform(0.5, 2.0, 50)
    gb2, gB2 = simulate(rng, G, sig, b=4, k=8, draws=4000)
    est = noise.estimate(gb2, gB2, 4, 32)
    truth = sig.sum() / (G @ G)
    assert est.b_simple == pytest.approx(truth, rel=0.05)
    assert est.trace_sigma == pytest.approx(sig.sum(), rel=0.03)
    assert est.ci90[0] < est.b_simple < est.ci90[1]


def test_interval_coverage_simulated():
    rng = np.random.default_rng(1)
    G = np.full(8, 0.5)
    sig = np.ones(8)
    truth = sig.sum() / (G @ G)
    hits = 0
    reps = 400
    for _ in range(reps):
        gb2, gB2 = simulate(rng, G, sig, b=2, k=8, draws=60)
        lo, hi = noise.estimate(gb2, gB2, 2, 16).ci90
        hits += lo <= truth <= hi
    assert 0.85 <= hits / reps <= 0.95


def test_averaging_before_dividing_differs_from_mean_of_ratios():
    rng = np.random.default_rng(2)
    gb2, gB2 = simulate(rng, np.full(4, 0.2), np.ones(4), b=1, k=4, draws=200)
    tr, g2 = noise.per_draw_terms(gb2, gB2, 1, 4)
    est = noise.estimate(gb2, gB2, 1, 4)
    assert est.b_simple == pytest.approx(tr.mean() / g2.mean())
    assert (g2 < 0).any()  # single-draw |G|² can be negative; the ratio of means is still sane
    assert est.b_simple > 0


def test_delta_fallback_when_denominator_insignificant():
    num = np.array([10.0, 12.0, 9.0, 11.0])
    den = np.array([1.0, -1.0, 0.5, -0.2])
    r, (lo, hi), method = noise.ratio_interval(num, den)
    assert method == "delta"
    assert lo < r < hi


def test_rel_halfwidth_and_sqrt_table():
    st = noise.NoiseStats(1, 1, 10.0, (8.0, 13.0), "fieller", 5, 1, 2)
    assert st.rel_halfwidth == pytest.approx(0.3)
    rows = noise.sqrt_table(16.0, 64, max_batch=300)
    assert [r["batch_size"] for r in rows] == [64, 128, 256]
    assert rows[1]["std_vs_B"] == pytest.approx(1 / math.sqrt(2))
    assert rows[0]["relative_noise"] == pytest.approx(0.5)


def test_bad_arguments():
    with pytest.raises(ValueError):
        noise.per_draw_terms([1.0], [1.0], 4, 4)
    with pytest.raises(ValueError):
        noise.per_draw_terms([1.0, 2.0], [1.0], 1, 4)
