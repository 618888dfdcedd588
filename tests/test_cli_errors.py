"""Bad input through the real CLI: one line on stderr naming the problem, exit 2, no traceback.

Each case runs the CLI's entry point in-process (tests/hostile.py ``run_main``: piped, 80 columns,
as a subprocess sees it). ``{d}`` in an argument is replaced by a temporary folder holding the files
of ``FILES``.
"""
from __future__ import annotations

import pytest

from hostile import cli_env, run_main

BASE = {"--lr": "0.1", "--batch-size": "128", "--dataset-size": "50000", "--epochs": "200", "--momentum": "0.9",
        "--schedule": "MultiStepLR(milestones=[60,120,160], gamma=0.2)"}

FILES = {
    "empty.csv": "epoch,lr\n",
    "late.csv": "epoch,lr\n0,0.1\n250,0.01\n",
    "text.csv": "epoch,lr\n0,0.1\n10,fast\n",
    "start.csv": "epoch,lr\n5,0.1\n",
    "mom.csv": "epoch,lr,momentum\n0,0.1,1.5\n",
    "bad.toml": "batch-size = 128\nepochs = [\n",
    "unknown.toml": "batch-size = 128\nwarp-speed = 9\n",
    "typo.toml": 'lr = "fast"\n',
    "binary.toml": b"\xff\xfe\x00bad",
}


def convert(**over):
    """convert-schedule argv from BASE with some options replaced (None drops one)."""
    opts = {**BASE, **over}
    argv = ["convert-schedule"]
    for k, v in opts.items():
        if v is not None:
            argv += [k, v]
    return argv


# (id, argv, fragments the message must contain (all, case-insensitive))
CASES = [
    ("negative-lr", convert(**{"--lr": "-0.1"}), ["--lr"]),
    ("zero-lr", convert(**{"--lr": "0"}), ["--lr"]),
    ("nan-lr", convert(**{"--lr": "nan"}), ["--lr", "nan"]),
    ("inf-lr", convert(**{"--lr": "inf"}), ["--lr"]),
    ("text-lr", convert(**{"--lr": "fast"}), ["--lr"]),
    ("zero-batch", convert(**{"--batch-size": "0"}), ["--batch-size"]),
    ("negative-batch", convert(**{"--batch-size": "-128"}), ["--batch-size"]),
    ("float-batch", convert(**{"--batch-size": "12.5"}), ["--batch-size"]),
    ("zero-dataset", convert(**{"--dataset-size": "0"}), ["--dataset-size"]),
    ("zero-epochs", convert(**{"--epochs": "0"}), ["--epochs"]),
    ("momentum-one", convert(**{"--momentum": "1"}), ["--momentum"]),
    ("momentum-negative", convert(**{"--momentum": "-0.5"}), ["--momentum"]),
    ("momentum-nan", convert(**{"--momentum": "nan"}), ["--momentum"]),
    ("batch-over-n", convert(**{"--batch-size": "60000"}), ["--batch-size", "--dataset-size"]),
    ("milestone-past-end", convert(**{"--schedule": "MultiStepLR(milestones=[60,120,200], gamma=0.2)"}),
     ["milestone", "200"]),
    ("unknown-scheduler", convert(**{"--schedule": "WarpLR(gamma=0.1)"}), ["unknown scheduler", "WarpLR"]),
    ("lambda-scheduler", convert(**{"--schedule": "LambdaLR(lr_lambda=lambda e: 0.9 ** e)"}), ["LambdaLR"]),
    ("malformed-expression", convert(**{"--schedule": "MultiStepLR(milestones=[60,120"}), ["malformed"]),
    ("gamma-nan-call", convert(**{"--schedule": "StepLR(step_size=30, gamma=float('nan'))"}), ["gamma"]),
    ("gamma-nan-name", convert(**{"--schedule": "StepLR(step_size=30, gamma=nan)"}), ["gamma"]),
    ("gamma-zero", convert(**{"--schedule": "ExponentialLR(gamma=0)"}), ["gamma"]),
    ("import-os-system", convert(**{"--schedule": "__import__('os').system('touch {d}/pwned')"}),
     ["scheduler"]),
    ("wrong-argument", convert(**{"--schedule": "StepLR(step_size=30, decay=0.1)"}), ["decay"]),
    ("step-size-zero", convert(**{"--schedule": "StepLR(step_size=0)"}), ["step_size"]),
    ("empty-schedule", convert(**{"--schedule": ""}), ["--schedule"]),
    ("missing-schedule", convert(**{"--schedule": None}), ["--schedule"]),
    ("missing-batch-size", convert(**{"--batch-size": None}), ["--batch-size"]),
    ("missing-csv", convert(**{"--schedule": "{d}/nope.csv"}), ["nope.csv", "not found"]),
    ("empty-csv", convert(**{"--schedule": "{d}/empty.csv"}), ["empty.csv", "no rows"]),
    ("csv-past-end", convert(**{"--schedule": "{d}/late.csv"}), ["late.csv", "250"]),
    ("csv-not-numbers", convert(**{"--schedule": "{d}/text.csv"}), ["text.csv", "row 2"]),
    ("csv-not-from-zero", convert(**{"--schedule": "{d}/start.csv"}), ["start.csv", "epoch 0"]),
    ("csv-momentum", convert(**{"--schedule": "{d}/mom.csv"}), ["mom.csv", "momentum"]),
    ("missing-toml", convert() + ["--config", "{d}/nope.toml"], ["nope.toml", "not found"]),
    ("malformed-toml", convert() + ["--config", "{d}/bad.toml"], ["bad.toml", "TOML"]),
    ("binary-toml", convert() + ["--config", "{d}/binary.toml"], ["binary.toml"]),
    ("unknown-toml-key", convert() + ["--config", "{d}/unknown.toml"], ["warp-speed"]),
    ("toml-wrong-type", convert(**{"--lr": None}) + ["--config", "{d}/typo.toml"], ["--lr"]),
    ("unknown-option", convert() + ["--warp-speed", "9"], ["--warp-speed"]),
    ("unknown-command", ["convert-scheduel"], ["convert-scheduel"]),
    ("bad-schedule-unit", convert(**{"--schedule-unit": "minute"}), ["--schedule-unit", "minute"]),
    ("bad-rule", convert(**{"--rule": "linear"}), ["--rule"]),
    ("bad-optimizer", convert(**{"--optimizer": "lars"}), ["--optimizer", "lars"]),
    ("bad-adam-rule", convert(**{"--optimizer": "adam", "--adam-rule": "cubic"}), ["--adam-rule"]),
    ("momentum-to-with-adam", convert(**{"--optimizer": "adam", "--momentum-to": "0.95"}), ["--momentum-to"]),
    ("momentum-to-one", convert(**{"--momentum-to": "1.0"}), ["--momentum-to"]),
    ("max-batch-below-b0", convert(**{"--max-batch": "64"}), ["--max-batch"]),
    ("max-fraction-zero", convert(**{"--max-fraction": "0"}), ["--max-fraction"]),
    ("max-fraction-nan", convert(**{"--max-fraction": "nan"}), ["--max-fraction"]),
    ("round-to-zero", convert(**{"--round-to": "0"}), ["--round-to"]),
    ("max-stages-zero", convert(**{"--max-stages": "0"}), ["--max-stages"]),
    ("stage-factor-below-one", convert(**{"--stage-factor": "0.5"}), ["--stage-factor"]),
    ("stage-factor-inf", convert(**{"--stage-factor": "inf"}), ["--stage-factor"]),
    ("increase-lr-below-one", convert(**{"--increase-lr": "0.5"}), ["--increase-lr"]),
    ("out-folder-missing", convert() + ["--out", "{d}/no/such/dir/plan.json"], ["--out"]),
    ("option-missing-value", convert()[:-1], ["--schedule"]),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_errors")
    for name, body in FILES.items():
        (d / name).write_bytes(body if isinstance(body, bytes) else body.encode())
    return d


@pytest.mark.parametrize("argv,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(files, argv, fragments):
    argv = [a.replace("{d}", str(files)) for a in argv]
    env = cli_env(COLUMNS="80")  # narrow terminal: the message must still be 1 line
    r = run_main(argv, cwd=files, env=env)
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), r.stderr
    assert lines[0].startswith("error: ")
    for frag in fragments:
        assert frag.replace("{d}", str(files)).lower() in lines[0].lower(), (frag, lines[0])
    assert not (files / "pwned").exists()


def test_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
