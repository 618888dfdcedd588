"""docs/integration.md's training loop runs, is short, and really follows the plan."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "integration.md").read_text(), re.S)
    assert len(blocks) == 1, "integration.md should hold exactly one ```python block"
    return blocks[0]


def test_block_is_under_30_lines():
    assert len([ln for ln in python_block().splitlines() if ln.strip()]) < 30


def test_block_runs_and_follows_the_plan(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(python_block())
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 8
    rows = [re.match(r"epoch (\d+): batch (\d+), lr ([\d.e-]+), loss ([\d.]+)", ln).groups() for ln in lines]

    from bsadvisor.core.convert import convert_schedule  # the same plan, built here independently

    plan = convert_schedule(lr=0.05, batch_size=32, momentum=0.9, dataset_size=2048, epochs=8,
                            schedule="MultiStepLR(milestones=[3, 5, 7], gamma=0.2)")
    assert [int(b) for _, b, _, _ in rows] == plan.batch_sizes()
    assert [float(lr) for _, _, lr, _ in rows] == [float(f"{plan.at(e).lr:.4g}") for e in range(8)]
    assert max(plan.batch_sizes()) > 32  # the batch really grows
    assert float(rows[-1][3]) < 0.1 and all(math.isfinite(float(r[3])) for r in rows)  # and the model trains
