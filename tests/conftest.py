"""Test-wide settings.

Hypothesis: CI (CI=true, as .ci/run is called) runs the property tests derandomized and
without the example database, so a CI run is deterministic and a failure seen once is not
replayed forever from `.hypothesis/`; a local run still explores new examples each time.

Threads: the suite runs in pytest-xdist workers (``-n`` in pyproject's addopts). Each worker,
and every CLI or torchrun process it starts, gets an equal share of the cores as its torch
thread count, so two workers on two cores do not fight over them (torch's default is every
core per process). Set before torch is imported, as OMP_NUM_THREADS is read once, at import.
"""
from __future__ import annotations

import os
import sys

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    if "torch" in sys.modules:  # a plugin got there first
        sys.modules["torch"].set_num_threads(_share)
