"""Test-wide settings.

Hypothesis: CI (CI=true, as .ci/run is called) runs the property tests derandomized and
without the example database, so a CI run is deterministic and a failure seen once is not
replayed forever from `.hypothesis/`; a local run still explores new examples each time.
"""
from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
