"""The probe's and validate's frozen option objects: defaults written once, checked once with the
messages the CLI always gave, and passed whole (keyword calls build the same object)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from bsadvisor.core import checks
from bsadvisor.core.defaults import PROBE_DEFAULTS, VALIDATE_DEFAULTS
from bsadvisor.core.errors import UserError
from bsadvisor.core.probe_options import ProbeOptions
from bsadvisor.core.validate_options import ValidateOptions
from bsadvisor.core.verdict import Margin


def cli_defaults(command: str) -> dict:
    """Each option of a CLI command with the default `--help` shows."""
    import typer

    import bsadvisor.cli.advise  # noqa: F401  (importing a command module registers it)
    import bsadvisor.cli.probe  # noqa: F401
    import bsadvisor.cli.validate  # noqa: F401
    from bsadvisor.cli.app import app

    return {p.name: p.default for p in typer.main.get_command(app).commands[command].params}


def field_defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("command,cls,expected", [
    ("probe", ProbeOptions, {"device", "batch_size", "lr", "warmup_steps", "budget_seconds", "target_rel_ci",
                             "estimator", "memory_limit", "seed", "draws"}),
    ("advise", ProbeOptions, {"device", "batch_size", "lr", "budget_seconds", "seed"}),
    ("validate", ValidateOptions, {"seeds", "variants", "hybrid_cap", "increase_lr", "tolerance", "evals",
                                   "max_micro_batch", "checkpoint_every", "noise_monitor", "monitor_overhead",
                                   "out", "resume", "overwrite", "max_minutes"}),
])
def test_the_cli_shows_the_defaults_of_the_options_object(command, cls, expected):
    cli, fields = cli_defaults(command), field_defaults(cls)
    shared = set(cli) & set(fields)
    assert expected <= shared, expected - shared
    assert {name: cli[name] for name in shared} == {name: fields[name] for name in shared}


def test_defaults_are_written_once():
    assert ProbeOptions().budget_seconds == PROBE_DEFAULTS["budget_seconds"] == 12.0
    assert cli_defaults("probe")["budget_seconds"] == ProbeOptions().budget_seconds
    assert {k: getattr(ProbeOptions(), k) for k in PROBE_DEFAULTS} == PROBE_DEFAULTS
    assert {k: getattr(ValidateOptions(), k) for k in VALIDATE_DEFAULTS} == VALIDATE_DEFAULTS


@pytest.mark.parametrize("kwargs,message", [
    (dict(estimator="magic"), "estimator must be one of microbatch, two-batch, per-example, got 'magic'"),
    (dict(seed=2**70), "seed must be below 2**63, got an integer of about 22 digits"),
    (dict(seed=-1), "seed must be ≥ 0, got -1"),
    (dict(budget_seconds=math.inf), "budget_seconds must be a finite number, got inf"),
    (dict(budget_seconds=0), "budget_seconds must be > 0, got 0"),
    (dict(target_rel_ci=1), "target_rel_ci must be < 1, got 1"),
    (dict(micro_batches=1), "micro_batches must be ≥ 2, got 1"),
    (dict(memory_limit=0.5), "memory_limit must be ≥ 1, got 0.5"),
    (dict(draws=1), "draws must be ≥ 2, got 1"),
    (dict(batch_size=1), "batch_size must be ≥ 2, got 1"),
    (dict(warmup_steps=-1), "warmup_steps must be ≥ 0, got -1"),
    (dict(lr="0.1"), "lr must be a number, got '0.1'"),
])
def test_probe_options_refuse_bad_values_naming_the_parameter(kwargs, message):
    with pytest.raises(UserError) as info:
        ProbeOptions(**kwargs)
    assert str(info.value) == message
    assert info.value.parameter == next(iter(kwargs))  # the CLI shows it as its option (--seed)


@pytest.mark.parametrize("kwargs,message", [
    (dict(seeds=0), "seeds must be ≥ 1, got 0"),
    (dict(seeds=10**6), "seeds must be ≤ 1000, got 1000000"),
    (dict(hybrid_cap=-64), "hybrid_cap must be ≥ 1, got -64"),
    (dict(increase_lr=1), "increase_lr must be > 1, got 1"),
    (dict(increase_lr=math.nan), "increase_lr must be a finite number, got nan"),
    (dict(tolerance="nan"), "tolerance must be a finite number ≥ 0, got nan"),
    (dict(tolerance="-0.01"), "tolerance must be a finite number ≥ 0, got -0.01"),
    (dict(evals=0), "evals must be ≥ 1, got 0"),
    (dict(max_micro_batch=0), "max_micro_batch must be ≥ 1, got 0"),
    (dict(checkpoint_every=0), "checkpoint_every must be ≥ 1, got 0"),
    (dict(monitor_overhead=0), "monitor_overhead must be > 0, got 0"),
    (dict(max_minutes=0), "max_minutes must be > 0, got 0"),
    (dict(max_minutes=10**8), "max_minutes must be ≤ 1e+07, got 100000000"),
])
def test_validate_options_refuse_bad_values_naming_the_parameter(kwargs, message):
    """The library names the parameter (as ProbeOptions and ConvertOptions do); the CLI spells it as the flag."""
    from tests.hostile import run_main

    (name, value), = kwargs.items()
    with pytest.raises(UserError) as info:
        ValidateOptions(**kwargs)
    assert str(info.value) == message
    assert info.value.parameter == name
    flag = "--" + name.replace("_", "-")
    shown = f"{value:.0f}" if isinstance(value, float) and math.isfinite(value) else str(value)
    r = run_main(["validate", "builtin:linreg", flag, shown])
    rule = message[len(name):message.rindex(", got")]  # the value as the CLI parsed it: 1.0 for --increase-lr 1
    assert r.returncode == 2 and r.stderr.startswith(f"error: {flag}{rule}, got "), r.stderr

def test_options_are_frozen_clean_and_round_trip():
    p = ProbeOptions(seed=3.0, budget_seconds=2, draws=4.0)
    assert (p.seed, p.budget_seconds, p.draws) == (3, 2.0, 4) and type(p.seed) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 4
    assert ProbeOptions(**dataclasses.asdict(p)) == p
    assert dataclasses.replace(p, seed=5) == ProbeOptions(seed=5, budget_seconds=2, draws=4)
    v = ValidateOptions(seeds=2, tolerance="1%", out="runs/x", max_minutes=3)
    assert v.tolerance == Margin(0.01, relative=True, given=True) and v.out == Path("runs/x")
    assert ValidateOptions(**{f.name: getattr(v, f.name) for f in dataclasses.fields(v)}) == v
    assert ValidateOptions().tolerance == Margin()


def test_validate_monitor_settings():
    assert ValidateOptions().monitor_settings == {"overhead": 0.05, "min_points": 5}
    assert ValidateOptions(noise_monitor=False).monitor_settings is None
    assert ValidateOptions(noise_monitor=None).monitor_settings is None
    given = ValidateOptions(noise_monitor={"overhead": 0.2, "min_points": 3})  # NoiseMonitor settings as they are
    assert given.noise_monitor and given.monitor_settings == {"overhead": 0.2, "min_points": 3}
    with pytest.raises(UserError, match="^monitor_overhead"):
        ValidateOptions(noise_monitor={"overhead": 2.0})
    with pytest.raises(UserError, match="^monitor_overhead"):  # checked also when the monitor is off
        ValidateOptions(noise_monitor=False, monitor_overhead=math.inf)


def test_keyword_calls_build_the_same_object():
    base = ProbeOptions(seed=1)
    assert checks.options_object(ProbeOptions, None, {"seed": 1}, "probe") == base
    assert checks.options_object(ProbeOptions, base, {}, "probe") is base
    assert checks.options_object(ProbeOptions, base, {"draws": 3}, "probe") == ProbeOptions(seed=1, draws=3)
    with pytest.raises(TypeError, match=r"^options must be a ProbeOptions, got dict"):
        checks.options_object(ProbeOptions, {"seed": 1}, {}, "probe")
    with pytest.raises(UserError, match="^seed "):  # keywords over an object are checked as well
        checks.options_object(ProbeOptions, base, {"seed": -1}, "probe")


def test_an_unknown_keyword_is_the_usual_type_error_before_any_work():
    import bsadvisor
    from bsadvisor.runtime.validate import run_validation

    with pytest.raises(TypeError, match=r"^probe\(\) got an unexpected keyword argument 'budget'$"):
        bsadvisor.probe("no_such_module:target", budget=3)  # refused before the target is looked for
    with pytest.raises(TypeError, match=r"^run_validation\(\) got an unexpected keyword argument 'seed'$"):
        run_validation(None, [], seed=2)
    with pytest.raises(UserError, match="^seed "):
        bsadvisor.probe("no_such_module:target", seed=-1)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "", "CPU0"])
def test_one_device_check_for_every_command(device, tmp_path):
    """probe, advise, validate and ProbeOptions spell a bad --device out the same way (checks.device)."""
    from tests.hostile import assert_one_line_error, run_main

    expected = f"--device must be cpu, cuda, cuda:N or auto, got {device!r}"
    with pytest.raises(UserError, match=r"^device must be cpu, cuda, cuda:N or auto"):
        ProbeOptions(device=device)
    for argv in (["probe", "builtin:linreg"], ["advise", "builtin:linreg"], ["validate", "builtin:linreg", "--schedule", "MultiStepLR(milestones=[2], gamma=0.1)", "--epochs", "3"]):
        line = assert_one_line_error(run_main([*argv, "--device", device], cwd=tmp_path))
        assert line == "error: " + expected, (argv, line)


@pytest.mark.parametrize("device", ["auto", "cpu", "CPU", "cuda", "cuda:1"])
def test_device_spellings_pass_the_check(device):
    assert checks.device("--device", device) == device


def test_probe_memory_limit_takes_a_size_as_people_write_it():
    """`bsadvisor probe --memory-limit 8GiB` builds ProbeOptions from what it parsed: the size is read there,
    once, for the CLI and the library alike (a bad one names the parameter, which the CLI spells --memory-limit)."""
    assert ProbeOptions(memory_limit="2KiB").memory_limit == 2048 == ProbeOptions(memory_limit=2048).memory_limit
    with pytest.raises(UserError, match=r"^memory_limit: .*below one byte") as info:
        ProbeOptions(memory_limit="0.5B")
    assert info.value.parameter == "memory_limit"
