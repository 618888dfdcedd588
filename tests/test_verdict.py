"""The paired verdict (core/verdict.py, concepts eqs. 21–23) on synthetic metric tables: no training."""
from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from bsadvisor.core.errors import UserError
from bsadvisor.core.verdict import (ACCEPTED, INCONCLUSIVE, REJECTED, Margin, paired_interval, paired_verdict,
                                    parse_margin, seeds_needed, t_quantile)
from bsadvisor.runtime.validate import verdict


@pytest.mark.parametrize("confidence, dof", [(0.9, 1), (0.9, 2), (0.9, 9), (0.95, 4), (0.5, 30)])
def test_t_quantile_matches_scipy_stats(confidence, dof):
    assert t_quantile(confidence, dof) == pytest.approx(stats.t.ppf(0.5 + confidence / 2, dof), rel=1e-10)


def test_interval_is_scipys_paired_t_interval():
    cand, ref = [0.81, 0.74, 0.92, 0.66], [0.80, 0.76, 0.90, 0.67]
    ds = [c - r for c, r in zip(cand, ref)]
    mean, lo, hi, sd = paired_interval(ds)
    truth = stats.t.interval(0.9, len(ds) - 1, loc=statistics.fmean(ds), scale=stats.sem(ds))
    assert (lo, hi) == pytest.approx(truth, rel=1e-9) and mean == pytest.approx(statistics.fmean(ds))
    # the paired t test's p-value against 0 agrees: the interval holds 0 exactly when p > 0.10
    assert (lo < 0 < hi) == (stats.ttest_rel(cand, ref).pvalue > 0.10)


def test_seeds_that_disagree_alone_but_agree_paired_give_a_narrow_interval():
    # Two seeds 0.2 apart on their own (initial weights, data order), the plan tracking each one.
    ref, cand = [0.55, 0.75], [0.552, 0.753]
    v = paired_verdict(cand, ref)
    lo, hi = v["interval"]
    assert v["status"] == ACCEPTED and hi - lo < 0.02
    assert statistics.stdev(ref) > 0.14  # the old rule's tolerance, 2 × sd, would have been 0.28


def test_the_reverse_is_inconclusive_not_accepted():
    # The same means, but the plan's seeds do not track the original's: the paired differences disagree.
    ref, cand = [0.55, 0.75], [0.75, 0.551]
    v = paired_verdict(cand, ref)
    assert v["status"] == INCONCLUSIVE and v["interval"][0] < -0.005 < v["interval"][1]


def test_three_outcomes():
    ref = [0.80, 0.70, 0.90]
    assert paired_verdict([0.801, 0.702, 0.899], ref)["status"] == ACCEPTED
    assert paired_verdict([0.75, 0.66, 0.84], ref)["status"] == REJECTED
    assert paired_verdict([0.81, 0.68, 0.89], ref)["status"] == INCONCLUSIVE
    better = paired_verdict([0.90, 0.82, 0.99], ref)  # better than the original: accepted (one-sided margin)
    assert better["status"] == ACCEPTED and better["difference"] > 0


def test_one_seed_decides_from_the_difference_alone():
    v = paired_verdict([0.796], [0.80])
    assert v["status"] == ACCEPTED and v["interval"] is None and v["sd"] is None
    assert paired_verdict([0.79], [0.80])["status"] == REJECTED


def test_seeds_suggested_settles_it_when_mean_and_sd_hold():
    ref = [0.80, 0.70, 0.90]
    cand = [0.81, 0.68, 0.89]
    v = paired_verdict(cand, ref)
    n = v["seeds_suggested"]
    assert v["status"] == INCONCLUSIVE and n is not None and n > 3
    mean, sd, delta = v["difference"], v["sd"], v["margin"]
    # independent check with scipy.stats: at n seeds the interval clears -δ, at n - 1 it does not
    half = lambda k: stats.t.ppf(0.95, k - 1) * sd / math.sqrt(k)  # noqa: E731
    assert half(n) < abs(mean + delta) <= half(n - 1)
    # a table of n seeds with that mean and sd is then decided
    ds = [mean + sd * z for z in _unit_sd(n)]
    assert paired_verdict([r + d for r, d in zip([0.8] * n, ds)], [0.8] * n)["status"] != INCONCLUSIVE


def _unit_sd(n):
    """n numbers with mean 0 and sample sd 1."""
    xs = [(-1) ** i * 1.0 for i in range(n)]
    m = statistics.fmean(xs)
    xs = [x - m for x in xs]
    s = statistics.stdev(xs)
    return [x / s for x in xs]


def test_seeds_needed_never_for_a_difference_at_the_margin():
    assert seeds_needed(-0.005, 0.01, 0.005) is None
    assert seeds_needed(-0.0049999, 0.5, 0.005) is None  # more than 1000 seeds


def test_relative_margin_and_parsing():
    assert parse_margin(None) == Margin()
    assert parse_margin("0.01") == Margin(0.01, False, True)
    m = parse_margin("2%")
    assert m.relative and m.resolve(-2.5) == pytest.approx(0.05)
    v = paired_verdict([-2.54, -2.52], [-2.5, -2.49], m)
    assert v["margin"] == pytest.approx(0.02 * 2.495) and "2%" in v["margin_rule"]
    for bad in ("x", "-1", "nan", "inf", "150%", "%"):
        with pytest.raises(UserError):
            parse_margin(bad)


def test_not_finite_metric_rejects_with_a_reason():
    v = paired_verdict([0.8, float("nan")], [0.8, 0.8])
    assert v["status"] == REJECTED and v["reason"]


def _run(metrics, updates=100):
    seeds = [{"seed": i, "metric": m, "final_train_loss": 1.0, "updates": updates, "examples": 10, "wall_s": 1.0}
             for i, m in enumerate(metrics)]
    return {"seeds": seeds, "summary": {"metric_mean": statistics.fmean(metrics), "updates": updates,
                                        "wall_s_mean": 1.0}}


def test_validate_verdict_document():
    runs = {"original": _run([0.80, 0.70, 0.90], 300), "plan": _run([0.801, 0.702, 0.899], 100),
            "hybrid-64": _run([0.75, 0.66, 0.84], 200)}
    v = verdict(runs)
    assert v["status"] == "accepted" and v["accepted"] is True and v["update_ratio"] == 3
    assert v["paired"] == pytest.approx([0.001, 0.002, -0.001]) and len(v["interval"]) == 2
    assert v["margin"] == 0.005 and v["seeds_suggested"] is None
    assert v["variants"]["hybrid-64"]["status"] == "rejected"
    assert v["within_tolerance"] == {"plan": True, "hybrid-64": False}
    runs["plan"] = _run([0.81, 0.68, 0.89], 100)
    v = verdict(runs, "0.005")
    assert v["status"] == "inconclusive" and v["accepted"] is False and v["seeds_suggested"] > 3
