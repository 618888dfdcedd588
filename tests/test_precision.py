"""Training as the user trains: optimizer_kwargs, max_grad_norm and precision on every path.

Checked from outside the package: a global optimizer step hook (torch's
``register_optimizer_step_pre_hook``) sees every step's settings and gradient norm, and the
loss_fn itself records the autocast state it runs under.
"""
from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import bsadvisor
from bsadvisor import Target
from bsadvisor.core.errors import UserError
from bsadvisor.runtime.precision import StepRecipe
from bsadvisor.runtime.train import train_plan
from bsadvisor.targets.builtins import linreg, linreg_truth
from bsadvisor.targets.target import check_target

from tests.hostile import run_main


def _mlp_target(precision="32", clip=None, kwargs=None, n=512, seed=0, **fields) -> Target:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 8, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = centers[y] + torch.randn(n, 8, generator=gen)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))

    def loss_fn(m, batch):
        xb, yb = batch
        return nn.functional.cross_entropy(m(xb), yb)

    def metric_fn(m, batch):
        xb, yb = batch
        return float((m(xb).argmax(-1) == yb).float().mean())

    data = torch.utils.data.TensorDataset(x, y)
    return Target(model=model, train_dataset=data, loss_fn=loss_fn, batch_size=32, lr=0.01, optimizer="adamw",
                  optimizer_kwargs=kwargs or {}, max_grad_norm=clip, precision=precision, eval_dataset=data,
                  metric_fn=metric_fn, name="mlp", **fields)


def _plan(target: Target, epochs: float = 1.0):
    """A per-step cosine over ``epochs`` converted to batch growth: the plan the tests train."""
    steps = math.ceil(target.dataset_size * epochs / target.batch_size)
    return bsadvisor.convert_schedule(lr=target.lr, batch_size=target.batch_size, momentum=target.beta1,
                                      dataset_size=target.dataset_size, epochs=epochs, optimizer=target.optimizer,
                                      schedule=f"CosineAnnealingLR(T_max={steps})", schedule_unit="step")


# --------------------------------------------------------------------------- the Target's fields
@pytest.mark.parametrize("fields, message", [
    (dict(optimizer_kwargs={"betaz": (0.9, 0.95)}), r"optimizer_kwargs has 'betaz', which torch.optim.AdamW does "
                                                    r"not take \(it takes .*betas.*eps"),
    (dict(optimizer_kwargs={"lr": 0.1}), r"optimizer_kwargs sets 'lr'; give it as Target.lr instead"),
    (dict(optimizer_kwargs={"betas": (0.9, 1.5)}), r"optimizer_kwargs\['betas'\] must be two numbers in \[0, 1\)"),
    (dict(optimizer_kwargs={"eps": -1.0}), r"torch.optim.AdamW refused optimizer_kwargs .*eps"),
    (dict(optimizer_kwargs={"betas": (0.8, 0.95)}, momentum=0.9), r"momentum 0.9 and optimizer_kwargs\['betas'\]"),
    (dict(max_grad_norm=-1.0), r"max_grad_norm must be a positive number"),
    (dict(precision="bf16"), r"precision must be one of '32', 'bf16-mixed', '16-mixed'"),
    (dict(optimizer="sgd", optimizer_kwargs={"betas": (0.9, 0.95)}), r"torch.optim.SGD does not take"),
    (dict(param_groups=[{"params": ["0.weight"]}]), r"param_groups must name every trainable parameter once; "
                                                    r"'0.bias' is missing"),
])
def test_bad_recipe_fields_are_one_line(fields, message):
    kw = {k: fields.pop(k) for k in ("optimizer_kwargs",) if k in fields}
    t = _mlp_target(kwargs=kw.get("optimizer_kwargs"))
    for k, v in fields.items():
        setattr(t, k, v)
    t.__post_init__()
    with pytest.raises(UserError, match=message) as err:
        check_target(t)
    assert "\n" not in str(err.value)


def test_optimizer_kwargs_and_param_groups_reach_the_optimizer():
    t = _mlp_target(kwargs={"betas": (0.9, 0.95), "eps": 1e-6, "amsgrad": True},
                    param_groups=[{"params": ["0.weight", "2.weight"]}, {"params": ["0.bias", "2.bias"],
                                                                          "weight_decay": 0.0}])
    t.weight_decay = 0.1
    check_target(t)
    opt = t.make_optimizer()
    assert [g["betas"] for g in opt.param_groups] == [(0.9, 0.95)] * 2
    assert [g["eps"] for g in opt.param_groups] == [1e-6] * 2 and opt.param_groups[0]["amsgrad"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[1]["params"][0] is t.model[0].bias
    # Adam's β1 is the momentum: the plan's, per update; β2 and eps stay the user's
    assert t.make_optimizer(momentum=0.8).param_groups[0]["betas"] == (0.8, 0.95)
    assert t.beta1 == 0.9 and t.recipe()["optimizer_kwargs"] == {"betas": [0.9, 0.95], "eps": 1e-6, "amsgrad": True}


def test_adam_sde_scales_the_users_own_beta2_and_eps():
    """Companion scaling (eq. 27): 1 − β2 × κ and ε / √κ, from the target's β2 = 0.95 and ε = 1e-6, not 0.999/1e-8."""
    from bsadvisor.runtime.scheduler import BatchSizeScheduler

    t = _mlp_target(kwargs={"betas": (0.9, 0.95), "eps": 1e-6}, n=4096)
    plan = bsadvisor.convert_schedule(lr=t.lr, batch_size=32, momentum=0.9, dataset_size=t.dataset_size, epochs=3,
                                      optimizer="adamw", adam_sde=True,
                                      schedule="MultiStepLR(milestones=[1, 2], gamma=0.5)")
    opt = t.make_optimizer()
    sched = BatchSizeScheduler(plan, opt)
    checked = 0
    for stage in plan.stages:
        sched.seek(stage.start_sample)
        s = plan.at_sample(stage.start_sample)
        kappa = s.beta2_factor
        beta2 = opt.param_groups[0]["betas"][1]
        assert beta2 == pytest.approx(1 - min(1.0, kappa * 0.05))
        assert opt.param_groups[0]["eps"] == pytest.approx(1e-6 * s.eps_factor)
        checked += kappa > 1
    assert checked  # a stage with κ > 1 was checked


# --------------------------------------------------------------------------- StepRecipe
def test_recipe_refuses_a_device_without_autocast_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: False)
    with pytest.raises(UserError, match=r"precision 'bf16-mixed': torch has no autocast on cpu; use precision '32'"):
        StepRecipe("bf16-mixed", device=torch.device("cpu"))


def _overflowing_target(precision="16-mixed", clip=None) -> Target:
    """Linear regression with targets of ~1e3: at the GradScaler's first scale (2¹⁶) the fp16 gradient of the
    output overflows, so the first steps are skipped while the scaler backs off."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=gen)
    y = 1000.0 * (x @ torch.randn(4, generator=gen))
    torch.manual_seed(0)
    model = nn.Linear(4, 1)

    def loss_fn(m, batch):
        xb, yb = batch
        return ((m(xb).squeeze(-1).float() - yb) ** 2).mean()

    return Target(model=model, train_dataset=torch.utils.data.TensorDataset(x, y), loss_fn=loss_fn, batch_size=16,
                  lr=1e-3, optimizer="sgd", max_grad_norm=clip, precision=precision, name="overflow")


def test_a_skipped_scaler_step_is_reported_and_not_counted():
    t = _overflowing_target()
    plan = _plan(t)
    steps = []
    handle = register_optimizer_step_post_hook(lambda opt, a, k: steps.append(1))
    try:
        r = train_plan(t, plan, seed=0)
    finally:
        handle.remove()
    skipped = r.skipped_steps
    assert skipped and skipped[0]["samples"] == 0 and skipped[0]["loss_scale"] == 65536.0
    # each skip halved the scale, as GradScaler's backoff does
    assert [s["loss_scale"] for s in skipped] == [65536.0 / 2 ** i for i in range(len(skipped))]
    assert r.final["updates"] == plan.updates - len(skipped)   # not counted as updates of the plan
    assert len(steps) == r.final["updates"]                    # and the optimizer really stepped that often
    assert r.final["examples"] == plan.total_samples           # the plan moved on past their examples
    assert r.to_dict()["skipped_steps"] == skipped


def test_clipping_bounds_every_step_and_the_noise_monitor_reads_the_unclipped_gradient():
    """clip 1e-3 is far below the gradient norm: every step the optimizer takes sees norm ≤ clip, and the
    monitor's accumulated draws still give the unclipped |G|² (the same as an unclipped run's first point)."""
    norms = []

    def hook(opt, args, kwargs):
        norms.append(float(torch.sqrt(sum(p.grad.double().square().sum() for g in opt.param_groups
                                          for p in g["params"] if p.grad is not None))))

    points = {}
    for clip in (None, 1e-3):
        t = _mlp_target(clip=clip)
        handle = register_optimizer_step_pre_hook(hook)
        try:
            r = train_plan(t, _plan(t, 0.25), seed=0, max_micro_batch=8, noise_monitor={"window": 1})
        finally:
            handle.remove()
        points[clip] = r.noise_trace[0]
        if clip is not None:
            clipped = norms[-r.final["updates"]:]
            assert max(clipped) <= clip * (1 + 1e-5)
    first, clipped_first = points[None], points[1e-3]
    assert first["grad_sq_norm"] > 1e-3 ** 2 * 100   # the true gradient is far above the clip
    assert clipped_first["grad_sq_norm"] == pytest.approx(first["grad_sq_norm"], rel=1e-9)  # same θ, unclipped


# --------------------------------------------------------------------------- noise under fp16 and bf16
def _linreg32(precision: str) -> Target:
    """builtin:linreg in float32 (autocast leaves float64 alone) under ``precision``."""
    t = linreg()
    t.model = t.model.float()
    t.train_dataset = torch.utils.data.TensorDataset(*(a.float() for a in t.train_dataset.tensors))
    t.precision = precision
    return t


def test_fp16_gradscaler_noise_scale_equals_fp32_and_the_closed_form():
    """Under fp16 autocast with a GradScaler the probe's B_simple (unscaled gradients) equals the fp32 one
    within the estimator's interval, and both hold the closed form of eq. 13 at the measured θ."""
    results = {}
    for precision in ("32", "16-mixed"):
        t = _linreg32(precision)
        r = bsadvisor.probe(t, draws=40, seed=0, budget_seconds=120, measure_memory=False, measure_throughput=False)
        w = r.measured_state["weight"].double().numpy()
        trace, g2 = linreg_truth(w, t.metadata["w_star"], t.metadata["noise"])
        assert r.noise.ci90[0] <= trace / g2 <= r.noise.ci90[1]
        results[precision] = r.noise
    fp32, fp16 = results["32"], results["16-mixed"]
    assert fp32.ci90[0] <= fp16.b_simple <= fp32.ci90[1] and fp16.ci90[0] <= fp32.b_simple <= fp16.ci90[1]
    assert fp16.b_simple == pytest.approx(fp32.b_simple, rel=0.02)  # the same draws, fp16 rounding apart


def test_monitor_accumulated_draw_under_a_gradscaler_is_the_fp32_one():
    """One accumulated update at the same θ: the monitor's |G_b|² and |G_B|² under fp16 + GradScaler (the scale
    divided out) equal the fp32 ones up to fp16 rounding."""
    from bsadvisor.runtime.batches import make_gather
    from bsadvisor.runtime.monitor import NoiseMonitor
    from bsadvisor.runtime.step import train_step

    points = {}
    for precision in ("32", "16-mixed"):
        t = _linreg32(precision)
        monitor = NoiseMonitor(t.model, window=1)
        recipe = StepRecipe.of(t)
        opt = t.make_optimizer(lr=1e-9)
        idx = torch.arange(256)
        train_step(t.model, opt, t.loss_fn, make_gather(t.train_dataset), idx, max_micro_batch=32, monitor=monitor,
                   recipe=recipe)
        assert not recipe.skipped
        points[precision] = monitor.end_update(0, 1e-9, 0.0, 256, 0, grad_scale=recipe.last_scale)
    assert StepRecipe("16-mixed").loss_scale == 65536.0
    for key in ("grad_sq_norm", "trace_sigma", "b_simple"):
        assert points["16-mixed"][key] == pytest.approx(points["32"][key], rel=0.01)


@pytest.mark.slow  # three probes of a small MLP
def test_bf16_probe_b_simple_within_ten_percent_of_fp32():
    got = {}
    for precision in ("32", "bf16-mixed"):
        t = _mlp_target(precision=precision, n=4096)
        got[precision] = bsadvisor.probe(t, draws=24, seed=0, budget_seconds=120, measure_memory=False,
                                         measure_throughput=False).noise.b_simple
    assert got["bf16-mixed"] == pytest.approx(got["32"], rel=0.10)
    assert got["bf16-mixed"] != got["32"]  # bf16 did run


# --------------------------------------------------------------------------- resume
class _Stop(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32", "16-mixed"])
def test_a_clipped_run_resumes_bit_identically(tmp_path, precision):
    """Clipping (and under fp16 the GradScaler's state, with skipped steps): killed mid-epoch, resumed from the
    checkpoint, the run ends with the uninterrupted run's weights, losses and skipped steps, bit for bit."""
    t = _overflowing_target(precision, clip=5.0)
    plan = _plan(t, 2.0)
    init = {k: v.clone() for k, v in t.model.state_dict().items()}
    whole = train_plan(t, plan, seed=1, init_state=init)
    final = {k: v.clone() for k, v in t.model.state_dict().items()}
    ckpt = tmp_path / "run.pt"
    seen = []

    def stop(n):
        seen.append(n)
        if len(seen) == 20:  # under fp16 after 13 skipped steps, at 7 updates
            raise _Stop

    with pytest.raises(_Stop):
        train_plan(t, plan, seed=1, init_state=init, checkpoint=ckpt, checkpoint_every=3, on_step=stop)
    doc = torch.load(ckpt, weights_only=True)
    if precision == "16-mixed":
        assert doc["scaler"]["scale"] < 65536.0 and doc["skipped_steps"]  # the scaler had backed off
    resumed = train_plan(t, plan, seed=1, init_state=init, checkpoint=ckpt, checkpoint_every=3, resume=True)
    assert all(torch.equal(final[k], v) for k, v in t.model.state_dict().items())
    def timeless(history):
        return [{k: v for k, v in rec.items() if k != "wall_s"} for rec in history]

    assert timeless(resumed.history) == timeless(whole.history) and resumed.skipped_steps == whole.skipped_steps
    assert resumed.resumed_from is not None
    # another recipe is another run: its checkpoint is refused
    t.max_grad_norm = 2.0
    with pytest.raises(UserError, match="belongs to a different run"):
        train_plan(t, plan, seed=1, init_state=init, checkpoint=ckpt, resume=True)


# --------------------------------------------------------------------------- the acceptance check
_SPY_TARGET = '''
import torch

import recipe_spy
from tests.test_precision import _mlp_target


def make_target():
    t = _mlp_target(precision="bf16-mixed", clip=0.25, kwargs={"betas": (0.9, 0.95), "eps": 1e-8})
    t.lr, t.weight_decay, t.name = 0.003, 0.01, "spy"
    loss = t.loss_fn

    def loss_fn(m, batch):  # the autocast state the user's loss runs under
        recipe_spy.calls.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return loss(m, batch)

    t.loss_fn = loss_fn
    return t
'''


@pytest.mark.slow  # a probe and a validate run
def test_probe_and_validate_train_the_users_recipe(tmp_path, monkeypatch):
    """AdamW betas (0.9, 0.95), eps 1e-8, clipping 0.25, bf16 autocast: probe and validate --seeds 1 run, and
    from outside: every loss_fn call ran under bf16 autocast, every optimizer step had betas (0.9, 0.95) and eps
    1e-8, and no step saw a gradient norm above 0.25."""
    spy = types.ModuleType("recipe_spy")
    spy.calls = []
    monkeypatch.setitem(sys.modules, "recipe_spy", spy)
    (tmp_path / "spy_target.py").write_text(_SPY_TARGET)
    steps = []

    def hook(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        steps.append(([g["betas"] for g in opt.param_groups], [g["eps"] for g in opt.param_groups], norm))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        probe = run_main(["probe", f"{tmp_path / 'spy_target.py'}:make_target", "--budget-seconds", "60",
                          "--draws", "6", "--json"], cwd=tmp_path)
        assert probe.returncode == 0, probe.stderr
        probe_steps, probe_calls = len(steps), len(spy.calls)
        out = tmp_path / "val"
        val = run_main(["validate", f"{tmp_path / 'spy_target.py'}:make_target", "--seeds", "1", "--epochs", "2",
                        "--schedule", "MultiStepLR(milestones=[1], gamma=0.2)", "--tolerance", "1", "--out", out],
                       cwd=tmp_path)
        assert val.returncode in (0, 1, 3), val.stderr
    finally:
        handle.remove()
    assert probe_steps > 0 and len(steps) > probe_steps + 2 * 16  # both runs stepped (16 updates an epoch)
    assert probe_calls > 0 and len(spy.calls) > probe_calls
    assert all(call == (True, torch.bfloat16) for call in spy.calls)
    for betas, eps, norm in steps:
        assert all(b == (0.9, 0.95) for b in betas) and all(e == 1e-8 for e in eps)
        assert norm <= 0.25 * (1 + 1e-5)
    doc = json.loads((out / "results.json").read_text())
    assert doc["recipe"] == {"optimizer": "adamw", "optimizer_kwargs": {"betas": [0.9, 0.95], "eps": 1e-8},
                             "weight_decay": 0.01, "max_grad_norm": 0.25, "precision": "bf16-mixed",
                             "param_groups": None}
    report = (out / "report.md").read_text()
    assert ("Trained with AdamW (betas (0.9, 0.95), eps 1e-08), weight decay 0.01, gradient clipping at norm 0.25, "
            "precision bf16-mixed") in report
    assert not math.isnan(doc["runs"]["plan"]["summary"]["metric_mean"])


@pytest.mark.slow  # two probes' memory searches
def test_bf16_activations_lower_the_probes_bytes_per_example():
    """The memory cap is measured under the user's precision: bf16 autocast saves half-size activations for
    backward, so a wide MLP's bytes per example fall (to about 0.5–0.6 of fp32's: the logits stay fp32)."""
    per_example = {}
    for precision in ("32", "bf16-mixed"):
        t = _mlp_target(precision=precision, n=4096)
        t.model = nn.Sequential(nn.Linear(8, 1024), nn.Tanh(), nn.Linear(1024, 1024), nn.Tanh(), nn.Linear(1024, 3))
        r = bsadvisor.probe(t, draws=2, seed=0, budget_seconds=120, measure_throughput=False, memory_limit=2**28)
        per_example[precision] = r.memory.bytes_per_sample
    assert 0.4 < per_example["bf16-mixed"] / per_example["32"] < 0.75


def test_fp16_noise_draws_back_off_the_loss_scale_as_the_scaler_does():
    """No warmup: the draws start at the GradScaler's first scale (2¹⁶), where this model's fp16 gradients
    overflow; each overflow halves the scale and draws again, and B_simple is the fp32 one up to fp16 rounding."""
    got = {}
    for precision in ("32", "16-mixed"):
        t = _overflowing_target(precision)
        got[precision] = bsadvisor.probe(t, draws=8, seed=0, warmup_steps=0, budget_seconds=60, measure_memory=False,
                                         measure_throughput=False).noise.b_simple
    assert got["16-mixed"] == pytest.approx(got["32"], rel=0.02)


def test_the_report_states_the_recipe_and_the_skipped_steps():
    from bsadvisor.runtime.report import recipe_lines

    doc = {"recipe": {"optimizer": "sgd", "optimizer_kwargs": {"dampening": 0.1}, "weight_decay": 0.0,
                      "max_grad_norm": None, "precision": "16-mixed", "param_groups": None},
           "runs": {"original": {"seeds": [{"skipped_steps": [{"samples": 0}]}, {"skipped_steps": []}]},
                    "plan": {"seeds": [{"skipped_steps": [{"samples": 0}, {"samples": 16}]}, {}]}}}
    assert recipe_lines(doc) == [
        "Trained with SGD (dampening 0.1), weight decay 0, no gradient clipping, precision 16-mixed (every run, every "
        "seed).", "",
        "Steps the fp16 GradScaler skipped (inf/NaN gradients; not counted as updates): original 1, plan 2 (all seeds).",
        ""]
    assert recipe_lines({"runs": {}}) == []  # a results.json from before the recipe was recorded
