"""bsadvisor.core.schedules against torch's own schedulers.

Each case builds the real torch scheduler with the same arguments, steps it once per
epoch (optimizer.step(); scheduler.step()) and compares the LR it leaves in the
optimizer before every step with ``parse_schedule(text).lr(k, base_lr)``.
"""
from __future__ import annotations

import math
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch.optim import lr_scheduler as L  # noqa: E402

from bsadvisor.core.errors import UserError  # noqa: E402
from bsadvisor.core.schedules import TableSchedule, parse_schedule  # noqa: E402

BASE_LR = 0.1
STEPS = 260  # past every T_max / total_iters / milestone used below

# (expression given to bsadvisor, the same scheduler built by torch)
CASES = [
    ("MultiStepLR(milestones=[60, 120, 160], gamma=0.2)",
     lambda o: L.MultiStepLR(o, milestones=[60, 120, 160], gamma=0.2)),
    ("MultiStepLR(milestones=[30, 30, 80], gamma=0.5)",  # a repeated milestone decays twice in torch
     lambda o: L.MultiStepLR(o, milestones=[30, 30, 80], gamma=0.5)),
    ("MultiStepLR([80, 10], 0.1)",  # positional, unsorted
     lambda o: L.MultiStepLR(o, [80, 10], 0.1)),
    ("StepLR(step_size=30, gamma=0.1)", lambda o: L.StepLR(o, step_size=30, gamma=0.1)),
    ("torch.optim.lr_scheduler.StepLR(7)", lambda o: L.StepLR(o, 7)),
    ("ExponentialLR(gamma=0.97)", lambda o: L.ExponentialLR(o, gamma=0.97)),
    ("CosineAnnealingLR(T_max=200)", lambda o: L.CosineAnnealingLR(o, T_max=200)),
    ("CosineAnnealingLR(T_max=40)", lambda o: L.CosineAnnealingLR(o, T_max=40)),  # well past T_max
    ("CosineAnnealingLR(T_max=90, eta_min=0.001)", lambda o: L.CosineAnnealingLR(o, T_max=90, eta_min=0.001)),
    ("CosineAnnealingLR(T_max=50, eta_min=0.02)", lambda o: L.CosineAnnealingLR(o, T_max=50, eta_min=0.02)),
    ("LinearLR(start_factor=0.1, total_iters=5)", lambda o: L.LinearLR(o, start_factor=0.1, total_iters=5)),
    ("LinearLR(start_factor=0.25, end_factor=1.0, total_iters=20)",
     lambda o: L.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=20)),
    ("LinearLR(start_factor=1.0, end_factor=0.05, total_iters=150)",
     lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=150)),
    ("LinearLR()", lambda o: L.LinearLR(o)),
    ("PolynomialLR(total_iters=100, power=2.0)", lambda o: L.PolynomialLR(o, total_iters=100, power=2.0)),
    ("PolynomialLR(total_iters=200, power=0.5)", lambda o: L.PolynomialLR(o, total_iters=200, power=0.5)),
    ("PolynomialLR()", lambda o: L.PolynomialLR(o)),
    ("ConstantLR(factor=0.5, total_iters=10)", lambda o: L.ConstantLR(o, factor=0.5, total_iters=10)),
    ("ConstantLR()", lambda o: L.ConstantLR(o)),
    ("SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=195)], milestones=[5])",
     lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.1, total_iters=5),
                                  L.CosineAnnealingLR(o, T_max=195)], milestones=[5])),
    ("SequentialLR([LinearLR(start_factor=0.1, total_iters=5), ExponentialLR(gamma=0.97), "
     "CosineAnnealingLR(T_max=100, eta_min=0.001)], milestones=[5, 50])",
     lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.1, total_iters=5), L.ExponentialLR(o, gamma=0.97),
                                  L.CosineAnnealingLR(o, T_max=100, eta_min=0.001)], milestones=[5, 50])),
    ("SequentialLR([ConstantLR(factor=0.5, total_iters=5), MultiStepLR(milestones=[30, 60], gamma=0.1), "
     "StepLR(step_size=7, gamma=0.5)], milestones=[10, 100])",
     lambda o: L.SequentialLR(o, [L.ConstantLR(o, factor=0.5, total_iters=5),
                                  L.MultiStepLR(o, milestones=[30, 60], gamma=0.1),
                                  L.StepLR(o, step_size=7, gamma=0.5)], milestones=[10, 100])),
]


def torch_lrs(make, base_lr: float = BASE_LR, steps: int = STEPS) -> list[float]:
    """LR in the optimizer before each of ``steps`` epochs, as a training loop sees it."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's internal step(0) deprecation warning
        sched = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    # relative error ≤ rel; where torch's value is ~0 (cosine at T_max), an absolute 1e-15·base instead
    return abs(a - b) <= rel * abs(b) + 1e-15 * BASE_LR


@pytest.mark.parametrize("text,make", CASES, ids=[c[0][:60] for c in CASES])
def test_lr_per_epoch_equals_torch(text, make):
    ours = parse_schedule(text)
    ref = torch_lrs(make)
    bad = [(k, ours.lr(k, BASE_LR), r) for k, r in enumerate(ref) if not close(ours.lr(k, BASE_LR), r)]
    assert not bad, f"{text}: first mismatches (k, ours, torch): {bad[:3]}"


def test_other_base_lr_scales():
    text, make = CASES[19]  # warmup + cosine
    ref = torch_lrs(make, base_lr=0.37, steps=200)
    ours = parse_schedule(text)
    assert all(close(ours.lr(k, 0.37), r) for k, r in enumerate(ref))


def test_piecewise_constant_flags():
    assert parse_schedule("MultiStepLR(milestones=[5], gamma=0.1)").piecewise_constant
    assert parse_schedule("StepLR(step_size=5)").piecewise_constant
    assert not parse_schedule("CosineAnnealingLR(T_max=5)").piecewise_constant
    assert not parse_schedule("ExponentialLR(gamma=0.9)").piecewise_constant
    assert not parse_schedule(CASES[19][0]).piecewise_constant
    assert parse_schedule(CASES[21][0]).piecewise_constant


def test_parse_never_executes(tmp_path):
    marker = tmp_path / "ran"
    payloads = [f"__import__('os').system('touch {marker}')",
                f"StepLR(step_size=__import__('os').system('touch {marker}'))",
                f"MultiStepLR(milestones=[open('{marker}', 'w')], gamma=0.1)",
                f"StepLR(step_size=1, gamma=(lambda: open('{marker}', 'w'))())"]
    for text in payloads:
        with pytest.raises(UserError):
            parse_schedule(text)
    assert not marker.exists()


@pytest.mark.parametrize("text,fragment", [
    ("FooLR(gamma=0.1)", "unknown scheduler"),
    ("LambdaLR(lr_lambda=0)", "LambdaLR is not supported"),
    ("ReduceLROnPlateau()", "not supported"),
    ("MultiStepLR(milestones=[60", "malformed"),
    ("StepLR(step_size=30, gamma=float('nan'))", "gamma"),
    ("StepLR(step_size=0)", "step_size"),
    ("StepLR(step_size=2.5)", "step_size"),
    ("StepLR(step_size=True)", "step_size"),
    ("StepLR(step_size=30, foo=1)", "no argument 'foo'"),
    ("StepLR(30, step_size=30)", "twice"),
    ("StepLR(**{'step_size': 3})", "* and **"),
    ("ExponentialLR(gamma=-0.5)", "gamma"),
    ("ExponentialLR(gamma=1e999)", "finite"),
    ("CosineAnnealingLR(T_max=0)", "T_max"),
    ("CosineAnnealingLR(T_max=10, eta_min=-1)", "eta_min"),
    ("LinearLR(start_factor=0)", "start_factor"),
    ("ConstantLR(factor=1.5)", "factor"),
    ("PolynomialLR(power=0)", "power"),
    ("MultiStepLR(milestones=5)", "milestones"),
    ("SequentialLR([StepLR(5), StepLR(5)], milestones=[])", "one milestone fewer"),
    ("SequentialLR([StepLR(5), StepLR(5), StepLR(5)], milestones=[9, 4])", "strictly increasing"),
    ("SequentialLR([StepLR(5), SequentialLR([StepLR(5)], milestones=[])], milestones=[3])", "flatten"),
    ("0.1", "not a scheduler call"),
    ("   ", "empty"),
])
def test_bad_expressions(text, fragment):
    with pytest.raises(UserError, match=None) as info:
        parse_schedule(text)
    assert fragment in str(info.value)


def test_milestones_past_the_end():
    s = parse_schedule("MultiStepLR(milestones=[60, 120, 200], gamma=0.2)")
    s.check(201)
    with pytest.raises(UserError, match="200"):
        s.check(200)
    seq = parse_schedule(CASES[20][0])  # milestones 5, 50
    with pytest.raises(UserError):
        seq.check(50)


def test_csv_table(tmp_path):
    f = tmp_path / "lr.csv"
    f.write_text("epoch,lr,momentum\n0,0.1,0.9\n60,0.02,0.9\n120,0.004,0.95\n")
    t = parse_schedule(str(f))
    assert isinstance(t, TableSchedule) and t.piecewise_constant
    expect = {0: (0.1, 0.9), 59: (0.1, 0.9), 60: (0.02, 0.9), 119: (0.02, 0.9), 120: (0.004, 0.95), 199: (0.004, 0.95)}
    for k, (lr, m) in expect.items():
        assert math.isclose(t.lr(k, 0.1), lr, rel_tol=1e-12) and t.momentum(k) == m
    assert math.isclose(t.lr(60, 0.3), 0.06, rel_tol=1e-12)  # another base LR rescales the table
    g = tmp_path / "nohdr.csv"
    g.write_text("0,0.5\n10,0.05\n")
    assert parse_schedule(str(g)).lr(10, 0.5) == 0.05 and parse_schedule(str(g)).momentum(3) is None


@pytest.mark.parametrize("body,fragment", [
    ("epoch,lr\n", "no rows"),
    ("epoch,lr\n1,0.1\n", "start at epoch 0"),
    ("epoch,lr\n0,0.1\n5,abc\n", "not numbers"),
    ("epoch,lr\n0,0.1\n5,-0.1\n", "lr must be"),
    ("epoch,lr\n0,0.1\n5,nan\n", "lr must be"),
    ("epoch,lr\n0,0.1\n5,0.01\n5,0.001\n", "increase strictly"),
    ("epoch,lr,momentum\n0,0.1,1.0\n", "momentum"),
    ("epoch,lr\n0,0.1,0.9\n", "columns"),
    ("when,rate\n0,0.1\n", "header"),
    ("epoch,lr\n0.5,0.1\n", "whole number"),
])
def test_bad_tables(tmp_path, body, fragment):
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(UserError) as info:
        parse_schedule(str(f))
    assert fragment in str(info.value)


# ---------------------------------------------------------------- pieces: where the LR may change
@pytest.mark.parametrize("text", [c[0] for c in CASES])
@pytest.mark.parametrize("horizon,stride", [(260, 1), (97, 1), (260, 7), (1, 1)])
def test_pieces_tile_the_run_and_are_constant_where_they_say(text, horizon, stride):
    """Brute force: pieces tile [0, horizon) in order, and a piece marked constant has one LR at every step."""
    s = parse_schedule(text)
    pieces = list(s.pieces(horizon, stride))
    assert pieces[0][0] == 0 and pieces[-1][1] == horizon
    assert all(a < b for a, b, _ in pieces) and all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))
    for a, b, smooth in pieces:
        if not smooth:
            assert len({s.lr(k, BASE_LR) for k in range(a, b)}) == 1, (a, b)


def test_pieces_of_a_step_schedule_do_not_grow_with_the_run():
    s = parse_schedule("MultiStepLR(milestones=[60, 120, 160], gamma=0.2)")
    assert list(s.pieces(10**12)) == [(0, 60, False), (60, 120, False), (120, 160, False), (160, 10**12, False)]
    assert list(parse_schedule("StepLR(step_size=5, gamma=0.5)").pieces(10**12, stride=5)) == [(0, 10**12, True)]


@pytest.mark.parametrize("text,horizon,fragment", [
    ("CosineAnnealingLR(T_max=40)", 200, "T_max=200"),
    ("LinearLR(start_factor=0.1, total_iters=10)", 10, "warmup"),
    ("SequentialLR([ConstantLR(factor=0.5, total_iters=5), CosineAnnealingLR(T_max=50)], milestones=[5])", 100,
     "T_max=95"),
])
def test_check_refuses_what_cannot_be_converted(text, horizon, fragment):
    with pytest.raises(UserError) as info:
        parse_schedule(text).check(horizon)
    assert fragment in str(info.value)


def test_check_accepts_a_warmup_cut_by_its_milestone_and_a_full_cosine():
    parse_schedule("SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=95)], "
                   "milestones=[5])").check(100)
    parse_schedule("CosineAnnealingLR(T_max=200)").check(200)
    parse_schedule("LinearLR(start_factor=1.0, end_factor=0.1, total_iters=500)").check(100)  # a decay: fine


@pytest.mark.parametrize("text,fragment", [
    ("StepLR(step_size=30, gamma=" + "-" * 600 + "1)", "gamma"),
    ("StepLR(step_size=30, gamma=" + "-" * 9000 + "1)", "nested too deeply"),
    ("a." * 3000 + "StepLR(30)", "nested too deeply"),
    ("StepLR(step_size=" + "9" * 5000 + ")", "thousands of digits"),
    ("StepLR(step_size=" + "9" * 4000 + ")", "2**63"),
    ("StepLR(step_size=30, gamma=1.5)", "> 1"),
    ("StepLR(30)" + " " * 10_000 + "x", "10,000"),
])
def test_hostile_expressions_are_one_short_line(text, fragment):
    with pytest.raises(UserError) as info:
        parse_schedule(text)
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg and len(msg) < 400
