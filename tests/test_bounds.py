"""A target's code that never returns is stopped at the documented bound (10 × --budget-seconds + 300 s).

The bound is shortened here (PROBE_GRACE_S patched to 1 s) so the test waits seconds, not minutes.
"""
from __future__ import annotations

import time

from hostile import assert_one_line_error, run_main

HANGING_IMPORT = "import time\ntime.sleep(10**6)\n"
HANGING_LOSS = '''
import time
import torch
from bsadvisor import Target


def make():
    x, y = torch.randn(64, 4), torch.randn(64)

    def loss(m, b):
        time.sleep(10**6)
    return Target(model=torch.nn.Linear(4, 1), train_dataset=torch.utils.data.TensorDataset(x, y), loss_fn=loss,
                  batch_size=8, lr=0.01)
'''


def test_advise_stops_a_target_whose_import_never_returns(tmp_path, monkeypatch):
    import bsadvisor.cli.app as app

    monkeypatch.setattr(app, "PROBE_GRACE_S", 1.0)
    (tmp_path / "hang.py").write_text(HANGING_IMPORT)
    t0 = time.monotonic()
    r = run_main(["advise", "hang.py:make", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "2",
                  "--budget-seconds", "0.1"], cwd=tmp_path)
    assert time.monotonic() - t0 < 30
    assert_one_line_error(r, ["stopped after 2 s", "did not return"])


def test_probe_stops_a_loss_that_never_returns(tmp_path, monkeypatch):
    import bsadvisor.cli.app as app

    monkeypatch.setattr(app, "PROBE_GRACE_S", 1.0)
    (tmp_path / "hang.py").write_text(HANGING_LOSS)
    t0 = time.monotonic()
    r = run_main(["probe", "hang.py:make", "--budget-seconds", "0.1"], cwd=tmp_path)
    assert time.monotonic() - t0 < 30
    assert_one_line_error(r, ["stopped after 2 s", "did not return"])


def test_validates_progress_bars_say_whether_it_has_a_time_limit(monkeypatch):
    """validate has no limit without --max-minutes: each progress bar says so and how to bound it."""
    import io

    from rich.console import Console

    import bsadvisor.cli.validate as validate

    for minutes, words in ((None, "no time limit: --max-minutes M bounds it"), (2.5, "limit 2.5 min")):
        out = io.StringIO()
        monkeypatch.setattr(validate, "err_console", Console(file=out, force_terminal=True, width=160))
        with validate._progress(minutes) as progress:
            task = progress.add_task("original seed 0", total=10)
            progress.advance(task, 5)
        assert words in out.getvalue()
