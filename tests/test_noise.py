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


def _fieller_statistic(num, den, r):
    """(n̄ − r·d̄)² / Var(n̄ − r·d̄): Fieller's set is where this is ≤ t² (computed here independently)."""
    n = len(num)
    diff = np.asarray(num) - r * np.asarray(den)
    return diff.mean() ** 2 / (diff.var(ddof=1) / n)


def test_insignificant_denominator_gives_a_lower_bound_not_an_interval_through_zero():
    from scipy import stats

    num = np.array([10.0, 12.0, 9.0, 11.0])
    den = np.array([1.0, -1.0, 0.5, -0.2])
    r, (lo, hi), kind = noise.ratio_interval(num, den)
    assert kind == "lower-bound" and hi == math.inf and lo > 0
    t2 = stats.t.ppf(0.95, df=3) ** 2
    assert _fieller_statistic(num, den, lo) == pytest.approx(t2, rel=1e-9)  # lo is the set's edge
    assert _fieller_statistic(num, den, lo * 10) < t2  # everything above it is in the set
    assert _fieller_statistic(num, den, lo * 0.9) > t2


def test_nothing_significant_gives_no_information():
    num = np.array([1.0, -1.0, 0.5, -0.4])
    den = np.array([1.0, -1.0, 0.5, -0.2])
    r, ci, kind = noise.ratio_interval(num, den)
    assert kind == "unbounded" and ci == (0.0, math.inf)
    est = noise.estimate([3.0, 1.0, 2.0], [3.5, 0.5, 2.0], 1, 4)  # tr Σ estimates of both signs
    assert not est.usable and est.rel_halfwidth == math.inf


def test_negative_estimate_is_never_usable():
    # |G_b|² below |G_B|² on average: tr Σ < 0, B_simple < 0, whatever the interval says
    est = noise.estimate([1.0, 1.1, 0.9, 1.0], [2.0, 2.1, 1.9, 2.05], 1, 4)
    assert est.b_simple < 0 and not est.usable
    assert not noise.usable(-5.0, "bounded") and not noise.usable(float("nan"), "bounded")
    assert "no upper bound" in noise.describe_interval(5.0, (2.0, math.inf), "lower-bound")


def _finite_population(rng, n, d):
    grads = rng.standard_normal((n, d)) + 0.12
    G = grads.mean(0)
    trace = ((grads - G) ** 2).sum(1).mean()  # tr Σ over the data set (1/N)
    return grads, trace, float(G @ G)


def test_finite_data_exact_expectations():
    # Without replacement E|G_b|² = |G|² + tr Σ·(1/b − 1/N)·N/(N − 1) (eq. 17): fed those, the
    # corrected estimator gives back tr Σ and |G|² exactly, the uncorrected one B/(1 − B/N) (eq. 18).
    n, b, B, tr, g2 = 200, 10, 80, 90.0, 1.5

    def expect(size):
        return g2 + tr * (1 / size - 1 / n) * n / (n - 1)

    est = noise.estimate([expect(b)] * 3, [expect(B)] * 3, b, B, dataset_size=n)
    assert est.trace_sigma == pytest.approx(tr, rel=1e-12)
    assert est.grad_sq_norm == pytest.approx(g2, rel=1e-12)
    naive = noise.estimate([expect(b)] * 3, [expect(B)] * 3, b, B).b_simple
    assert naive == pytest.approx((tr / g2) / (1 - (tr / g2) / (n - 1)) * n / (n - 1), rel=1e-12)


def test_finite_data_sampling_without_replacement():
    rng = np.random.default_rng(5)
    n, d, b, k = 240, 6, 12, 8
    grads, trace, g2 = _finite_population(rng, n, d)
    truth = trace / g2
    small, big = [], []
    for _ in range(6000):
        idx = rng.permutation(n)[:b * k].reshape(k, b)  # one batch of B = k·b without replacement
        micro = grads[idx].mean(1)
        small.append((micro ** 2).sum(1).mean())
        big.append((micro.mean(0) ** 2).sum())
    corrected = noise.estimate(small, big, b, b * k, dataset_size=n)
    naive = noise.estimate(small, big, b, b * k)
    assert truth / (1 - truth / n) > truth * 1.05  # the correction matters here
    assert corrected.ci90[0] <= truth <= corrected.ci90[1]
    assert not naive.ci90[0] <= truth <= naive.ci90[1]


def test_rel_halfwidth_and_sqrt_table():
    st = noise.NoiseStats(1, 1, 10.0, (8.0, 13.0), "bounded", 5, 1, 2)
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
    with pytest.raises(ValueError):
        noise.per_draw_terms([1.0], [1.0], 1, 4, dataset_size=3)  # B > N


def test_an_estimate_far_above_its_draws_batch_keeps_only_its_lower_end():
    # exact expectations, so Fieller's interval is the point itself: B_simple = 1000 from draws of B = 32
    tr, g2, b, B = 1000.0, 1.0, 4, 32
    small, big = [g2 + tr / b] * 3, [g2 + tr / B] * 3
    est = noise.estimate(small, big, b, B)
    assert est.b_simple == pytest.approx(1000.0) and est.ci_kind == "lower-bound"
    assert est.ci90[0] == pytest.approx(1000.0) and est.ci90[1] == math.inf and not est.usable
    # within the calibrated factor the same statistics give a bounded interval
    tr = noise.CALIBRATED_RATIO * B * 0.9
    est = noise.estimate([g2 + tr / b] * 3, [g2 + tr / B] * 3, b, B)
    assert est.ci_kind == "bounded" and est.usable


def test_describe_interval_keeps_small_noise_scales_readable():
    # a language model's B_simple at initialisation is below one sequence: 0.529 must not print as "1"
    assert noise.describe_interval(0.529, (0.21, 1.1), "bounded") == "0.529 (90% CI 0.21–1.1)"
    assert noise.describe_interval(52.0, (30.0, 4000.0), "bounded") == "52 (90% CI 30–4,000)"
    assert noise.describe_interval(52.0, (30.0, None), "lower-bound", ".4g") == "52 (90% CI: at least 30, no upper bound)"
