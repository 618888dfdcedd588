"""docs/monitor.md's loop runs, its monitor reads the accumulated micro-batches, and the trace loads."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # trains the doc's loop in a fresh interpreter
def test_monitor_doc_loop_runs_and_its_trace_is_a_noise_model(tmp_path):
    block = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "monitor.md").read_text(), re.S)
    assert len(block) == 1 and len([ln for ln in block[0].splitlines() if ln.strip()]) < 35
    (tmp_path / "loop.py").write_text(block[0])
    r = subprocess.run([sys.executable, "loop.py"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    # 3 epochs × 32 updates, a point every 8 updates
    assert lines[-1] == "12 points"
    printed = [re.match(r"sample (\d+): B_simple (-?\d+) \[(\d+), (\d+|inf)\] \((bounded|lower-bound|unbounded)\)$",
                        ln) for ln in lines[:-1]]
    assert len(printed) == 12 and all(printed), lines
    first = printed[0]
    assert first.group(5) == "bounded" and int(first.group(3)) <= int(first.group(2)) <= int(first.group(4))
    # open intervals are printed open, and B_simple grows as the loss falls: later lower bounds are far above
    # the first estimate
    assert all((m.group(4) == "inf") == (m.group(5) != "bounded") for m in printed)
    assert max(int(m.group(3)) for m in printed) > 10 * int(first.group(2))

    from bsadvisor.core.noise_model import load_trace
    from bsadvisor.core.temperature import TemperatureModel

    model = load_trace(tmp_path / "trace.json")
    tm = TemperatureModel(8192)
    assert model.source == "trace" and len(model.points) >= 1
    assert model.b_noise(0, tm.temperature(0.05, 0.0, 256), tm) > 0
