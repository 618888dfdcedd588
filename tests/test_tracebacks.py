"""Inputs that once reached a traceback: each is one clear line (exit 2) through the CLI, or a ValueError/TypeError naming
the parameter from the library, never Python's own OverflowError/AttributeError/TypeError from inside."""
from __future__ import annotations

import pytest

from hostile import assert_one_line_error, cli_env, run_main

from bsadvisor.core.errors import ArgumentTypeError, UserError


# -- CLI inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["probe", "advise"])
@pytest.mark.parametrize("seconds", ["9e8", "1e9", "1e300"])
def test_a_budget_past_the_os_timer_is_one_line(command, seconds, tmp_path):
    args = [command, "builtin:linreg", "--budget-seconds", seconds]
    if command == "advise":
        args += ["--epochs", "2", "--schedule", "MultiStepLR(milestones=[1], gamma=0.1)"]
    r = run_main(args, cwd=tmp_path)
    assert_one_line_error(r, ["--budget-seconds", "604800"])


def test_time_limit_past_the_os_timer_is_no_limit():
    from bsadvisor.cli.app import time_limit

    for seconds in (9e8, 1e300, float("inf")):
        with time_limit(seconds):  # setitimer would raise OverflowError
            pass


TORCHRUN = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}


@pytest.mark.parametrize("timeout", ["inf", "1e308", "1e12", "-1", "nan", "soon"])
def test_a_collective_timeout_out_of_range_is_one_line(timeout, tmp_path):
    r = run_main(["probe", "builtin:linreg", "--device", "cpu"], cwd=tmp_path,
                 env=cli_env(**TORCHRUN, BSADVISOR_DIST_TIMEOUT=timeout))
    assert_one_line_error(r, ["BSADVISOR_DIST_TIMEOUT"])


@pytest.mark.parametrize("name", ["WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"])
def test_a_huge_torchrun_variable_is_one_line(name, tmp_path):
    env = cli_env(**{**TORCHRUN, name: "99999999999999999999"})
    r = run_main(["probe", "builtin:linreg", "--device", "cpu"], cwd=tmp_path, env=env)
    assert_one_line_error(r, [name, "too large"])


def test_a_lost_peer_is_one_line(monkeypatch, tmp_path):
    """A surviving rank's collective fails in gloo when its peer is killed: one line, not gloo's traceback."""
    import torch.distributed as tdist

    import bsadvisor.runtime.validate as rv

    gloo = "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41234"
    error = getattr(tdist, "DistBackendError", RuntimeError)

    def killed(*a, **k):
        raise error(gloo + "\nException raised from ... (most recent call first):\nframe #0: c10::Error")

    monkeypatch.setattr(rv, "run_validation", killed)
    r = run_main(["validate", "builtin:linreg", "--epochs", "2", "--schedule", "MultiStepLR(milestones=[1], gamma=0.1)",
                  "--device", "cpu"], cwd=tmp_path)
    line = assert_one_line_error(r, ["another process of the torchrun job", "Connection closed by peer"])
    assert "frame #0" not in line


def test_any_other_runtime_error_still_shows_its_traceback(monkeypatch, tmp_path):
    """The lost-peer line is for the job's transport only: a bug elsewhere keeps its traceback."""
    import bsadvisor.runtime.validate as rv

    def bug(*a, **k):
        raise RuntimeError("Connection closed by peer, but no torchrun job")

    monkeypatch.setattr(rv, "run_validation", bug)
    r = run_main(["validate", "builtin:linreg", "--epochs", "2", "--schedule", "MultiStepLR(milestones=[1], gamma=0.1)",
                  "--device", "cpu"], cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" in r.stderr


# -- Lightning -------------------------------------------------------------------------------------
@pytest.mark.parametrize("package", ["lightning", "transformers"])
def test_a_framework_without_a_version_attribute(monkeypatch, package):
    pytest.importorskip(package)
    from importlib import metadata

    from bsadvisor.integrations import releases
    if package == "lightning":
        from bsadvisor.integrations.lightning import callback
        check = callback.check_lightning_version
    else:
        from bsadvisor.integrations.transformers import callback
        check = callback.check_transformers_version
    module = getattr(callback, package)  # the module object the check reads (sys.modules may hold a newer one)

    if package == "lightning":
        monkeypatch.delattr(module, "__version__")
    else:  # transformers' lazy module serves a deleted __version__ again: an empty one reads as missing
        monkeypatch.setattr(module, "__version__", None, raising=False)
    check()  # pip's record of the installed release answers

    def unknown(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(releases.metadata, "version", unknown)
    with pytest.raises(UserError, match=f"cannot tell which {package} is installed"):
        check()


# -- the library ------------------------------------------------------------------------------------
def _refuses(call, kind, *fragments):
    with pytest.raises(kind) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and isinstance(info.value, (TypeError, ValueError)), text
    for f in fragments:
        assert f in text, text
    return text


def test_advise_given_a_string_says_to_load_it():
    import bsadvisor

    _refuses(lambda: bsadvisor.advise("t.py:ok", {"epochs": 1}), ArgumentTypeError, "target", "load_target")
    _refuses(lambda: bsadvisor.advise(None), ArgumentTypeError, "target")
    target = bsadvisor.load_target("builtin:linreg")
    _refuses(lambda: bsadvisor.advise(target, "epochs=1"), ArgumentTypeError, "options")


def test_recommendation_needs_a_plan():
    import bsadvisor

    _refuses(lambda: bsadvisor.Recommendation(None).to_dict(), ArgumentTypeError, "plan")
    _refuses(lambda: bsadvisor.Recommendation("plan.json"), ArgumentTypeError, "plan")


@pytest.mark.parametrize("kw", [{"seed": -1}, {"seed": "0"}, {"run": 3}])
def test_load_trace_arguments(tmp_path, kw):
    from bsadvisor import load_trace

    _refuses(lambda: load_trace(tmp_path / "results.json", **kw), (TypeError, ValueError))


def test_train_step_with_garbage():
    import torch

    from bsadvisor import train_step

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.randn(8, 2)
    loss = lambda m, x: m(x).pow(2).mean()  # noqa: E731
    gather = lambda idx: data[idx]  # noqa: E731
    idx = torch.arange(4)
    _refuses(lambda: train_step("model", opt, loss, gather, idx), ArgumentTypeError, "model")
    _refuses(lambda: train_step(model, None, loss, gather, idx), ArgumentTypeError, "optimizer")
    _refuses(lambda: train_step(model, opt, 3, gather, idx), ArgumentTypeError, "loss_fn")
    _refuses(lambda: train_step(model, opt, loss, "data", idx), ArgumentTypeError, "gather")
    _refuses(lambda: train_step(model, opt, loss, gather, [0, 1]), ArgumentTypeError, "indices")
    _refuses(lambda: train_step(model, opt, loss, gather, torch.rand(4)), ArgumentTypeError, "indices")
    _refuses(lambda: train_step(model, opt, loss, gather, idx, max_micro_batch=0), UserError, "max_micro_batch")
    _refuses(lambda: train_step(model, opt, lambda m, x: 0.5, gather, idx), ArgumentTypeError, "loss_fn", "float")
    _refuses(lambda: train_step(model, opt, lambda m, x: m(x), gather, idx), ArgumentTypeError, "loss_fn", "shape")
    before = model.weight.detach().clone()
    assert train_step(model, opt, loss, gather, idx) > 0 and not torch.equal(before, model.weight)  # still trains


def test_noise_monitor_with_garbage():
    import torch

    from bsadvisor import NoiseMonitor

    model = torch.nn.Linear(2, 1)
    _refuses(lambda: NoiseMonitor("model"), ArgumentTypeError, "model")
    _refuses(lambda: NoiseMonitor(model, loss_fn=3), ArgumentTypeError, "loss_fn")
    _refuses(lambda: NoiseMonitor(model, overhead="a"), UserError, "overhead")
    _refuses(lambda: NoiseMonitor(model, draws=2.5), UserError, "draws")
    _refuses(lambda: NoiseMonitor(model, every="x"), UserError, "every")
    _refuses(lambda: NoiseMonitor(model, nope=3), ArgumentTypeError, "nope")
    _refuses(lambda: NoiseMonitor(model, settings={"draws": 4}), ArgumentTypeError, "settings")
    _refuses(lambda: NoiseMonitor(model, dataset_size=-5), UserError, "dataset_size")
    assert NoiseMonitor(model, draws=4).settings.draws == 4
    data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randn(8))
    monitor = NoiseMonitor(torch.nn.Linear(2, 1), lambda m, b: m(b[0]).mean(), data)
    for args, name in [((None, 0.1, 0.0, 4), "samples"), ((-1, 0.1, 0.0, 4), "samples"),
                       ((0, float("nan"), 0.0, 4), "lr"), ((0, 0.1, 1.0, 4), "momentum"),
                       ((0, 0.1, 0.0, True), "batch_size"), ((0, 0.1, 0.0, 4, -2), "update")]:
        _refuses(lambda: monitor.maybe_measure(*args), UserError, name)
    assert monitor.maybe_measure(0, 0.1, 0.0, 4, 1, 80) is None  # the first call only starts the clock


@pytest.mark.parametrize("field,value,fragment", [
    ("min_draws", -3, "min_draws"), ("min_draws", 1, "min_draws"), ("min_draws", 2.5, "min_draws"),
    ("min_draws", "10", "min_draws"), ("max_draws", 5, "max_draws"), ("max_draws", "x", "max_draws"),
    ("max_draws", 10**9, "max_draws"), ("measure_memory", "no", "measure_memory"),
    ("measure_memory", 0, "measure_memory"), ("measure_throughput", "false", "measure_throughput"),
    ("measure_throughput", None, "measure_throughput"), ("budget_seconds", 9e8, "budget_seconds"),
])
def test_probe_options_check_every_field(field, value, fragment):
    from bsadvisor import ProbeOptions

    _refuses(lambda: ProbeOptions(**{field: value}), UserError, fragment)


def test_probe_options_keep_good_values():
    from bsadvisor import ProbeOptions

    o = ProbeOptions(min_draws=4, max_draws=4, measure_memory=False, measure_throughput=True)
    assert (o.min_draws, o.max_draws, o.measure_memory, o.measure_throughput) == (4, 4, False, True)


def test_batchnorm_no_is_not_true():
    import bsadvisor

    opts = {"schedule": "MultiStepLR(milestones=[1], gamma=0.1)", "epochs": 2, "lr": 0.1, "batch_size": 8,
            "dataset_size": 1000}
    _refuses(lambda: bsadvisor.recommend(opts, batchnorm="no"), UserError, "batchnorm")
    assert not bsadvisor.recommend(opts, batchnorm=False).warnings
    assert any("BatchNorm" in w for w in bsadvisor.recommend(opts, batchnorm=True).warnings)


def test_a_lost_peer_inside_a_training_step_is_not_blamed_on_the_model(tmp_path):
    """A surviving rank's all-reduce fails inside train_step (gloo: "Connection reset by peer"): the one line
    says the other process stopped, not that the user's model raised."""
    import torch.distributed as tdist

    from bsadvisor.core.plan import Plan, Stage
    from bsadvisor.runtime.train import train_plan
    from bsadvisor.targets.builtins import linreg

    target = linreg(size=256)

    def gone(model, batch):
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:5329: Connection reset by "
                           "peer. This is typically caused by a remote worker hanging")

    target.loss_fn = gone
    plan = Plan(stages=[Stage(0, 256, 64, 0.01, 0.0, 1.0)], dataset_size=256)
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(UserError) as info:
            train_plan(target, plan)
    finally:
        tdist.destroy_process_group()
    text = str(info.value)
    assert "another process of the torchrun job stopped" in text and "model or loss_fn raised" not in text, text
    target.loss_fn = lambda m, b: (_ for _ in ()).throw(RuntimeError("Connection reset by peer"))
    with pytest.raises(UserError, match="the model or loss_fn raised"):  # no job: the user's own error
        train_plan(target, plan)
