"""The hostile-input suites together cover at least 150 inputs.

Each ``tests/test_bad_inputs_*.py`` keeps its table of hostile inputs in ``CASES`` and
runs every one through the CLI's entry point (exit 2, one line, no traceback, nothing changed);
tests/test_cli_errors.py holds the original table. This test counts them, so the
coverage cannot shrink unnoticed.
"""
from __future__ import annotations

import importlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_at_least_150_hostile_inputs():
    names = sorted(p.stem for p in HERE.glob("test_bad_inputs_*.py") if p.stem != Path(__file__).stem)
    names.append("test_cli_errors")
    counts = {}
    for name in names:
        cases = importlib.import_module(name).CASES
        ids = [c[0] if isinstance(c, (tuple, list)) else getattr(c, "id", c) for c in cases]
        assert len(set(map(str, ids))) == len(ids), f"{name}: case ids repeat"
        counts[name] = len(cases)
    assert sum(counts.values()) >= 150, counts
