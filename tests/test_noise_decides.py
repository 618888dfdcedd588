"""What the noise scale decides by default: nothing is capped or vetoed unless --noise-cap is given,
and a cap that is given binds exactly where the closed form of linear regression puts it (docs/concepts.md
eq. 13: |G|² = |δ|², tr Σ = (d+1)|δ|² + d s², so B_simple = d + 1 on noise-free labels, s = 0)."""
from __future__ import annotations

import pytest

from bsadvisor.core.noise_model import NoiseModel
from bsadvisor.core.predict import NOISE_NOT_USED, keep_batch_advice, plan_from_options
from bsadvisor.core.recommend import Recommendation

N, B0, LR, M, D = 32000, 32, 0.05, 0.9, 7
SCHEDULE = "MultiStepLR(milestones=[3,6,8], gamma=0.2)"
OPTIONS = dict(lr=LR, batch_size=B0, dataset_size=N, momentum=M, epochs=10, schedule=SCHEDULE, max_fraction=1.0)


def b_simple_truth(delta_sq: float, s_sq: float = 0.0, d: int = D) -> float:
    """eq. 13: tr Σ / |G|² for linear regression with x ~ N(0, I_d), label noise s², δ = w − w*."""
    return ((d + 1) * delta_sq + d * s_sq) / delta_sq


def truth_trace() -> NoiseModel:
    """What a monitor reads on the original run of noise-free linear regression: B_simple = d + 1 at every point
    (whatever |δ|² has shrunk to), measured at the original's LR there and B0."""
    rows = []
    for epoch, delta_sq in ((0, 4.0), (3, 0.5), (6, 1e-2), (8, 1e-4), (9.9, 1e-6)):
        lr = LR * 0.2 ** sum(epoch >= m for m in (3, 6, 8))
        b = b_simple_truth(delta_sq)
        rows.append({"sample": int(epoch * N), "b_simple": b, "ci90": [b, b], "ci_kind": "bounded", "lr": lr,
                     "momentum": M, "batch_size": B0})
    return NoiseModel.from_trace(rows)


def test_the_closed_form_is_d_plus_one_without_label_noise():
    assert b_simple_truth(3.0) == D + 1 and b_simple_truth(1e-9) == pytest.approx(D + 1)
    assert b_simple_truth(1.0, s_sq=1.0) == 2 * D + 1


@pytest.mark.parametrize("k", [3, 10, 25, 60, 500])
def test_a_given_cap_binds_exactly_where_the_truth_puts_it(k):
    """The plan keeps the original's temperature, so B_noise(s) = (d+1)·T_orig(s)/T(s) = d + 1 all along: the
    capped plan's batch is min(uncapped batch, k·(d+1)) at every sample (B0 kept: the batch never shrinks)."""
    free = plan_from_options(**OPTIONS)
    capped = plan_from_options(**OPTIONS, noise_trace=truth_trace(), noise_cap=k)
    cap = k * (D + 1)
    assert free.stage_batch_sizes() != [B0]
    samples = sorted({st.start_sample for st in free.stages} | {st.start_sample for st in capped.stages}
                     | {st.end_sample - 1 for st in free.stages})
    for s in samples:
        want = max(B0, min(free.at_sample(s).batch_size, cap))
        assert capped.at_sample(s).batch_size == want, (k, s)
    binds = any(b > cap for b in free.stage_batch_sizes())
    assert binds == (capped.stage_batch_sizes() != free.stage_batch_sizes())
    if not binds:  # a cap that never binds changes nothing: the same stages, LRs and updates
        assert [(st.start_sample, st.batch_size, st.lr) for st in capped.stages] == \
            [(st.start_sample, st.batch_size, st.lr) for st in free.stages]
        assert capped.updates == free.updates


def test_by_default_the_noise_scale_caps_and_vetoes_nothing_and_says_so():
    """B0 = 32 is 4× the true noise scale 8: a default cap of 4 × B_noise (keep the batch) would veto every plan
    here, though on noise-free regression a plan that keeps the LR summed per example loses nothing."""
    free = plan_from_options(**OPTIONS)
    default = Recommendation.from_options(OPTIONS, noise_trace=truth_trace())
    assert default.recommendation == "plan" and default.keep_batch is None
    assert default.plan.stage_batch_sizes() == free.stage_batch_sizes() and default.plan.updates == free.updates
    assert NOISE_NOT_USED in default.plan.notes and default.plan.inputs["noise_cap"] is None
    # asked for, a cap of 4 × B_noise = 32 = B0 keeps the batch: the veto is the user's choice, and said
    asked = Recommendation.from_options(OPTIONS, noise_trace=truth_trace(), noise_cap=4)
    assert asked.recommendation == "original" and asked.keep_batch["b_noise"] == pytest.approx(D + 1)
    assert keep_batch_advice(free, truth_trace()) is None  # no cap in the plan: no veto


# -- the capped plan in training: resumed bit for bit, and a cap that never binds trains as no cap ------------------
#: A small run of the same regression (d = 7, noise-free labels), SGD with momentum, MultiStepLR γ 0.2 at epochs 1-3.
SMALL = dict(lr=0.02, batch_size=8, dataset_size=8192, momentum=0.9, epochs=4, max_fraction=1.0,
             schedule="MultiStepLR(milestones=[1,2,3], gamma=0.2)")


def small_truth_trace() -> NoiseModel:
    """B_simple = d + 1 at every point of the small run's original (eq. 13 without label noise), read at the first
    and the last sample of each of its LR steps (so B·T, interpolated between points, is exact everywhere)."""
    rows = [{"sample": s, "b_simple": D + 1.0, "ci90": [D + 1.0, D + 1.0], "ci_kind": "bounded",
             "lr": 0.02 * 0.2 ** epoch, "momentum": 0.9, "batch_size": 8}
            for epoch in range(4) for s in (epoch * 8192, epoch * 8192 + 8191)]
    return NoiseModel.from_trace(rows)


def regression_target():
    import torch
    from torch import nn

    import bsadvisor

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8192, D, generator=g)
    y = x @ torch.randn(D, generator=g)
    torch.manual_seed(0)
    return bsadvisor.Target(model=nn.Linear(D, 1, bias=False), train_dataset=torch.utils.data.TensorDataset(x, y),
                            loss_fn=lambda m, b: nn.functional.mse_loss(m(b[0]).squeeze(-1), b[1]),
                            batch_size=8, lr=0.02, momentum=0.9, name="regression")


def test_a_capped_run_resumes_bit_identically_and_an_unbinding_cap_trains_as_no_cap(tmp_path):
    import torch

    from bsadvisor.runtime.train import initial_state, train_plan

    free = plan_from_options(**SMALL)
    capped = plan_from_options(**SMALL, noise_trace=small_truth_trace(), noise_cap=3)  # 3 × 8 = 24
    loose = plan_from_options(**SMALL, noise_trace=small_truth_trace(), noise_cap=500)  # 4,000: never binds
    assert max(capped.stage_batch_sizes()) == 24 < max(free.stage_batch_sizes()) < 500 * (D + 1)
    target = regression_target()
    init = initial_state(target.model)

    def weights():
        return [p.detach().clone() for p in target.model.parameters()]

    capped_run = train_plan(target, capped, seed=1, init_state=init)
    whole = weights()

    class Stop(Exception):
        pass

    def stop(record):
        raise Stop

    with pytest.raises(Stop):  # stopped after its first epoch, then resumed from the checkpoint
        train_plan(target, capped, seed=1, init_state=init, checkpoint=tmp_path / "c.pt", on_epoch=stop)
    resumed = train_plan(target, capped, seed=1, init_state=init, checkpoint=tmp_path / "c.pt", resume=True)
    assert resumed.resumed_from == 1
    assert all(torch.equal(a, b) for a, b in zip(whole, weights()))
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in capped_run.history]

    free_run = train_plan(target, free, seed=1, init_state=init)
    unlimited = weights()
    loose_run = train_plan(target, loose, seed=1, init_state=init)
    assert all(torch.equal(a, b) for a, b in zip(unlimited, weights()))
    assert [r["train_loss"] for r in loose_run.history] == [r["train_loss"] for r in free_run.history]
    # the cap that binds trains otherwise (both end at w*, noise-free: the losses on the way differ)
    assert [r["train_loss"] for r in capped_run.history][1:] != [r["train_loss"] for r in free_run.history][1:]
    assert capped_run.final["updates"] == capped.updates > free_run.final["updates"] == free.updates
