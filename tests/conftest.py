"""Test-wide settings.

Hypothesis: CI (CI=true, as .ci/run is called) runs the property tests derandomized and
without the example database, so a CI run is deterministic and a failure seen once is not
replayed forever from `.hypothesis/`; a local run still explores new examples each time.

Workers: the suite runs in pytest-xdist workers (``-n auto`` in pyproject's addopts), one per
core this process may use (its CPU affinity, which xdist's own count ignores), at most 4 (every
torchrun test starts three interpreters); on one core, none. Each worker, and every CLI
or torchrun process it starts, gets an equal share of the cores as its torch thread count, so
two workers on two cores do not fight over them (torch's default is every core per process).
Set before torch is imported, as OMP_NUM_THREADS is read once, at import.
"""
from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.hookimpl(optionalhook=True)  # without pytest-xdist: never called
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: the workers (None: PYTEST_XDIST_AUTO_NUM_WORKERS decides, as xdist documents)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    cores = _cores()
    return 0 if cores < 2 else min(cores, 4)


if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, _cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    if "torch" in sys.modules:  # a plugin got there first
        sys.modules["torch"].set_num_threads(_share)
