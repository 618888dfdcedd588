"""The paired verdict (core/verdict.py, concepts eqs. 21–23, 28–30) on synthetic metric tables: no training."""
from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from bsadvisor.core.errors import UserError
from bsadvisor.core.verdict import (ACCEPTED, INCONCLUSIVE, INDICATIVE, REJECTED, Margin, look_quantile,
                                    paired_interval, paired_verdict, parse_margin, seeds_needed, sequential_interval,
                                    settle_power, simulate_looks, spent_alpha, t_quantile)
from bsadvisor.runtime.validate import count_looks, earlier_looks, verdict


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


REF5 = [0.55, 0.75, 0.62, 0.70, 0.58]  # five seeds far apart on their own (initial weights, data order)


def test_seeds_that_disagree_alone_but_agree_paired_give_a_narrow_interval():
    # The plan tracks each seed of the original to within 0.003.
    cand = [r + d for r, d in zip(REF5, [0.002, 0.003, 0.001, 0.002, 0.003])]
    v = paired_verdict(cand, REF5)
    lo, hi = v["interval"]
    assert v["status"] == ACCEPTED and hi - lo < 0.02
    assert statistics.stdev(REF5) > 0.07  # a tolerance of 2 × sd would have been 0.14


def test_the_reverse_is_inconclusive_not_accepted():
    # The same means, but the plan's seeds do not track the original's: the paired differences disagree.
    cand = [0.75, 0.551, 0.70, 0.58, 0.62]
    v = paired_verdict(cand, REF5)
    assert v["status"] == INCONCLUSIVE and v["interval"][0] < -0.005 < v["interval"][1]


def test_three_outcomes():
    ref = [0.80, 0.70, 0.90, 0.75, 0.85]
    shifted = lambda ds: [r + d for r, d in zip(ref, ds)]  # noqa: E731
    assert paired_verdict(shifted([0.001, 0.002, -0.001, 0.0, 0.001]), ref)["status"] == ACCEPTED
    assert paired_verdict(shifted([-0.05, -0.04, -0.06, -0.05, -0.045]), ref)["status"] == REJECTED
    assert paired_verdict(shifted([0.01, -0.02, -0.01, 0.0, 0.005]), ref)["status"] == INCONCLUSIVE
    better = paired_verdict(shifted([0.10, 0.12, 0.09, 0.11, 0.10]), ref)  # better: accepted (one-sided margin)
    assert better["status"] == ACCEPTED and better["difference"] > 0


def test_one_seed_is_only_indicative():
    """One seed never accepts or rejects on its own, whatever its difference."""
    for d in (0.2, 0.0, -0.004, -0.006, -0.3):
        v = paired_verdict([0.80 + d], [0.80])
        assert v["status"] == INDICATIVE and v["interval"] is None and v["sd"] is None
        assert v["seeds_suggested"] is None
    # two seeds have a finite interval (t at look 1 with one degree of freedom: about 10.4)
    v = paired_verdict([0.9, 0.901], [0.8, 0.8])
    assert v["status"] == ACCEPTED and None not in v["interval"] and v["interval"][0] > 0.09
    assert look_quantile(2, 1) == pytest.approx(stats.t.ppf(1 - 0.05 * 6 / math.pi ** 2, 1), rel=1e-9)


def test_alpha_is_spent_across_looks_and_look_one_is_scipys_t_interval():
    """Eq. 28: α_k = α·6/(π²k²) sums to at most α = 0.05 over any number of looks (to α in the limit,
    Σ 1/k² = π²/6), decreases with k, and the interval at look k is scipy's Student-t interval at
    confidence 1 − 2α_k."""
    import numpy as np

    ks = np.arange(1, 10 ** 6 + 1)
    total = float(np.sum(spent_alpha(ks)))
    assert total <= 0.05 and total == pytest.approx(0.05, rel=1e-5)
    assert spent_alpha(1) == pytest.approx(0.0303964, rel=1e-5) and spent_alpha(2) == pytest.approx(spent_alpha(1) / 4)
    for bad in (lambda: spent_alpha(0), lambda: sequential_interval([0.1, 0.2], 0)):
        with pytest.raises(ValueError):
            bad()
    ds = [0.004, -0.001, 0.006, 0.002]
    for look in (1, 2, 5):
        mean, lo, hi, sd = sequential_interval(ds, look)
        truth = stats.t.interval(1 - 2 * spent_alpha(look), len(ds) - 1, loc=statistics.fmean(ds),
                                 scale=stats.sem(ds))
        assert (lo, hi) == pytest.approx(truth, rel=1e-9) and sd == pytest.approx(statistics.stdev(ds))
    # look 1 is wider than the one-look 90% interval, and every later look wider still
    widths = [sequential_interval(ds, k)[2] - sequential_interval(ds, k)[1] for k in (1, 2, 3)]
    one_look = paired_interval(ds)
    assert one_look[2] - one_look[1] < widths[0] < widths[1] < widths[2]
    v = paired_verdict([0.8 + d for d in ds], [0.8] * 4, look=3)
    assert v["look"] == 3 and v["interval"] == pytest.approx(list(sequential_interval(ds, 3)[1:3]), rel=1e-6)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            paired_verdict([0.8, 0.81], [0.8, 0.8], look=bad)


def test_the_union_bound_covers_the_true_mean_at_every_look():
    """Coverage over several looks, by simulation: 20,000 streams of seeds at the true mean, read at looks
    of 3, 5, 8, 13, 20, 30 and 50 seeds (the counts fixed beforehand); the fraction whose interval ever
    misses the true mean on the lower side stays below α = 5% (the union bound: at most Σ α_k), on either
    side below 10%; the one-look 90% t interval, read at every look, misses on a side far more often."""
    import numpy as np

    rng = np.random.default_rng(7)
    counts = [3, 5, 8, 13, 20, 30, 50]
    x = rng.normal(0.0, 1.0, (20000, counts[-1]))
    low = np.zeros(20000, dtype=bool)
    either = np.zeros(20000, dtype=bool)
    naive = np.zeros(20000, dtype=bool)
    for k, n in enumerate(counts, start=1):
        m, sd = x[:, :n].mean(axis=1), x[:, :n].std(axis=1, ddof=1)
        t = m / (sd / math.sqrt(n))
        low |= t > look_quantile(n, k)  # the lower end lo = d̄ − q·sd/√n above the true mean 0
        either |= np.abs(t) > look_quantile(n, k)
        naive |= t > stats.t.ppf(0.95, n - 1)
    assert low.mean() <= 0.05 and either.mean() <= 0.10 and naive.mean() > 0.12, (low.mean(), naive.mean())
    assert low.mean() > 0.02  # and it is not far more cautious than it needs to be


def test_seeds_suggested_give_80_percent_power():
    ref = [0.80, 0.70, 0.90]
    cand = [0.795, 0.697, 0.897]
    v = paired_verdict(cand, ref)
    n = v["seeds_suggested"]
    assert v["status"] == INCONCLUSIVE and n is not None and n > 3 and not v["too_close"]
    mean, sd, delta = v["difference"], v["sd"], v["margin"]
    theta = (mean + delta) / sd
    # independent check with scipy.stats' noncentral t, at the next look's α (look 2: α·6/(4π²)): at n seeds
    # the chance that t clears the look-2 quantile is ≥ 80%, at n − 1 not
    tau = lambda k: stats.t.ppf(1 - 0.05 * 6 / (math.pi ** 2 * 4), k - 1)  # noqa: E731
    power = lambda k: stats.nct.sf(tau(k), k - 1, theta * math.sqrt(k))  # noqa: E731
    assert power(n) >= 0.8 > power(n - 1)
    assert settle_power(theta, n, 2) == pytest.approx(power(n), rel=1e-9)
    assert paired_verdict(cand, ref, look=2)["seeds_suggested"] > n  # look 3 spends less: more seeds
    # and by simulation: n seeds of that mean and spread are accepted about 80% of the time
    import numpy as np

    rng = np.random.default_rng(3)
    ds = rng.normal(mean, sd, (4000, n))
    t = (ds.mean(axis=1) + delta) / (ds.std(axis=1, ddof=1) / math.sqrt(n))
    assert 0.77 < float(np.mean(t > tau(n))) < 0.87


def test_too_close_to_settle_exactly_on_the_margin():
    """A mean on the margin (within one standard error of it) gets no seed count, however small its spread."""
    ref = [0.80, 0.70, 0.90, 0.75]
    for ds in ([-0.005, -0.004, -0.006, -0.005], [-0.0051, -0.0049, -0.0045, -0.0056]):
        v = paired_verdict([r + d for r, d in zip(ref, ds)], ref)
        assert v["status"] == INCONCLUSIVE and v["seeds_suggested"] is None and v["too_close"], v


def test_seeds_needed_never_for_a_difference_at_the_margin():
    assert seeds_needed(-0.005, 0.01, 0.005) is None
    assert seeds_needed(-0.0049999, 0.5, 0.005) is None  # more than 1000 seeds


def test_resume_until_settled_accepts_at_most_5_percent_at_the_margin():
    """The sequential rule checked against itself: true mean exactly −δ, sd 0.004, the first verdict at 3
    seeds, then the suggested seeds up to three times (each look at its own α_k, the suggestion at the
    next look's). The fixed-n rule accepted 11.9% of such plans."""
    at = simulate_looks(-0.005, 0.004, 0.005, start=3, extra_looks=3, sims=20000, seed=0)
    assert at["accepted"] <= 0.05 and at["rejected"] <= 0.05 and at["looks"] > 1.3, at
    below = simulate_looks(-0.0052, 0.004, 0.005, sims=20000, seed=1)
    assert below["accepted"] <= at["accepted"] + 0.005
    good = simulate_looks(0.0, 0.004, 0.005, sims=4000, seed=2)  # the rule still decides a good plan
    assert good["accepted"] > 0.8 and good["first_accepted"] > 0.2, good
    for mean in (-0.005, -0.009, 0.0):  # one seed (the default --seeds 1): never accepted nor rejected
        one = simulate_looks(mean, 0.004, 0.005, start=1, sims=2000, seed=3)
        assert one["accepted"] == one["rejected"] == 0.0, one


def test_looks_are_counted_from_the_earlier_results(tmp_path):
    import json

    assert earlier_looks(tmp_path) == [] and earlier_looks(None) == []
    (tmp_path / "results.json").write_text(json.dumps({"schema": "bsadvisor.validation/1.1", "seeds": 3,
                                                       "verdict": {"status": "inconclusive"}}))
    assert earlier_looks(tmp_path) == [3]  # an older file: one look at its seeds
    assert count_looks([3], 10) == {"looks": 2, "look_seeds": [3, 10], "spending_look": 2}
    assert count_looks([3, 10], 10) == {"looks": 2, "look_seeds": [3, 10], "spending_look": 2}  # the same look
    # a look at one seed has no interval: it spends no α, so the first verdict at 3 seeds spends α_1
    assert count_looks([1], 3) == {"looks": 2, "look_seeds": [1, 3], "spending_look": 1}
    assert count_looks([], 1)["spending_look"] == 1 and count_looks([1, 3, 5], 8)["spending_look"] == 3
    (tmp_path / "results.json").write_text(json.dumps({"seeds": 10, "verdict": {"look_seeds": [3, 10]}}))
    assert earlier_looks(tmp_path) == [3, 10]
    for bad in ("{", "[]", json.dumps({"verdict": {"look_seeds": ["x"]}, "seeds": 2}), json.dumps({"seeds": 2})):
        (tmp_path / "results.json").write_text(bad)
        assert earlier_looks(tmp_path) == []


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
    runs = {"original": _run([0.80, 0.70, 0.90, 0.75, 0.85], 300),
            "plan": _run([0.801, 0.702, 0.899, 0.75, 0.851], 100),
            "hybrid-64": _run([0.75, 0.66, 0.84, 0.70, 0.805], 200)}
    v = verdict(runs)
    assert v["status"] == "accepted" and v["accepted"] is True and v["update_ratio"] == 3
    assert v["paired"] == pytest.approx([0.001, 0.002, -0.001, 0.0, 0.001]) and len(v["interval"]) == 2
    assert v["margin"] == 0.005 and v["seeds_suggested"] is None
    assert v["looks"] == 1 and v["look_seeds"] == [5] and "alpha spent across looks" in v["method"]
    assert v["variants"]["hybrid-64"]["status"] == "rejected"
    assert v["within_tolerance"] == {"plan": True, "hybrid-64": False}
    runs["plan"] = _run([0.81, 0.69, 0.89, 0.76, 0.86], 100)
    v = verdict(runs, "0.005", earlier=[3])
    assert v["status"] == "inconclusive" and v["accepted"] is False and v["seeds_suggested"] > 5
    assert v["looks"] == 2 and v["look_seeds"] == [3, 5]
    # the look is counted before judging: this is look 2, for the plan and every variant
    ds = [c - r for c, r in zip([0.81, 0.69, 0.89, 0.76, 0.86], [0.80, 0.70, 0.90, 0.75, 0.85])]
    from bsadvisor.core.verdict import seeds_needed as _sn
    assert v["interval"] == pytest.approx(list(sequential_interval(ds, 2)[1:3]))
    assert v["seeds_suggested"] == _sn(v["difference"], v["sd"], 0.005, have=5, look=3)
    h = [c - r for c, r in zip([0.75, 0.66, 0.84, 0.70, 0.805], [0.80, 0.70, 0.90, 0.75, 0.85])]
    assert v["variants"]["hybrid-64"]["interval"] == pytest.approx(list(sequential_interval(h, 2)[1:3]))
    assert verdict(runs, "0.005", earlier=[3, 5])["looks"] == 2  # nothing added since: still look 2
    after_one = verdict(runs, "0.005", earlier=[1])  # a one-seed look before: this is α's first look
    assert after_one["looks"] == 2 and after_one["spending_look"] == 1
    assert after_one["interval"] == pytest.approx(list(sequential_interval(ds, 1)[1:3]))


@pytest.mark.slow  # three short validate runs of builtin:linreg
def test_resume_counts_its_looks_from_the_results_in_out(tmp_path):
    """The looks come from --out's results.json, not from the user: 1 seed (indicative, exit 3), then
    --resume --seeds 3 (a second look), then the same command again (no seed added: the same look)."""
    import json

    from hostile import run_main

    out = tmp_path / "v"
    args = ["validate", "builtin:linreg", "--epochs", "2", "--schedule", "MultiStepLR(milestones=[1], gamma=0.1)",
            "--device", "cpu", "--no-noise-monitor", "--evals", "2", "--out", str(out)]
    first = run_main(args, cwd=tmp_path)
    v = json.loads((out / "results.json").read_text())["verdict"]
    assert first.returncode == 3 and v["status"] == INDICATIVE and (v["looks"], v["look_seeds"]) == (1, [1])
    assert "INDICATIVE" in first.stdout and "never decides" in " ".join(first.stdout.split())
    for _ in range(2):
        r = run_main([*args, "--seeds", "3", "--resume"], cwd=tmp_path)
        assert r.returncode in (0, 1, 3), r.stderr
        doc = json.loads((out / "results.json").read_text())
        v = doc["verdict"]
        assert doc["schema"] == "bsadvisor.validation/1.2" and (v["looks"], v["look_seeds"]) == (2, [1, 3])
        assert v["spending_look"] == 1  # the one-seed look spent nothing: 3 seeds are judged at α_1
        assert "alpha spent across looks" in v["method"] and len(v["paired"]) == 3


def test_older_results_still_read_with_their_own_wording():
    """A /1.1 document (single-look t interval, no method) is reported as it was; a /1.2 one as a sequence."""
    from bsadvisor.core.noise_model import VALIDATION_SCHEMAS
    from bsadvisor.runtime.report import settle_text, verdict_text

    old = {"status": "inconclusive", "reference": "original", "candidate": "plan", "reason": None,
           "difference": -0.002, "interval": [-0.008, 0.004], "paired": [0.0, -0.004, -0.002], "sd": 0.002,
           "margin": 0.005, "margin_rule": "the default", "confidence": 0.9, "seeds_suggested": 7}
    text = verdict_text({"verdict": old, "metric": "metric"})
    assert "90% CI [-0.0080, +0.0040]" in text and "about 7 seeds would likely settle it" in text
    new = {**old, "method": "cs", "looks": 2, "interval": [None, 0.004], "seeds_suggested": None, "too_close": True}
    text = verdict_text({"verdict": new, "metric": "metric"})
    assert "[−∞, +0.0040]" in text and "valid at every look (look 2)" in text and "too close to settle" in text
    assert "80% chance" in settle_text({"verdict": {**new, "seeds_suggested": 12, "too_close": False}})
    assert "bsadvisor.validation/1.2" in VALIDATION_SCHEMAS and "bsadvisor.validation/1.1" in VALIDATION_SCHEMAS


def test_the_documented_seed_counts_are_the_rules():
    """validate.md's table of seeds for an 80% chance at the second look (5 at 3 spreads from the margin ...
    46 at 0.5)."""
    from pathlib import Path

    from bsadvisor.core.verdict import seeds_for_power

    counts = [int(seeds_for_power(theta, 1, 2)[0]) for theta in (3, 2, 1.25, 0.8, 0.5)]
    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "validate.md").read_text().split())
    assert counts == [5, 6, 10, 20, 46]
    assert "about 5 seeds at 3 spreads, 6 at 2, 10 at 1.25, 20 at 0.8 and 46 at 0.5" in text


def test_a_variant_is_shown_at_the_main_verdicts_look():
    from bsadvisor.runtime.report import variant_difference_text

    main = {"confidence": 0.9, "method": "paired t, alpha spent across looks", "spending_look": 2, "looks": 2}
    variant = {"difference": 0.001, "interval": [-0.001, 0.003], "paired": [0.0, 0.001, 0.002]}
    assert variant_difference_text(variant, main).endswith("(look 2)")
    assert "(look" not in variant_difference_text(variant, {**main, "spending_look": 1, "looks": 1})
