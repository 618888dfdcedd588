"""The declared dependency ranges hold what is installed, and click's deprecations stay outside them
(typer is capped below 0.17 for its start-up time, and typer 0.16 uses click functions that click 9 removes)."""
from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from hostile import ROOT, cli_env

packaging = pytest.importorskip("packaging.requirements")


def declared() -> dict:
    """``[project].dependencies`` of pyproject.toml, as packaging Requirements by name (markers that hold)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [packaging.Requirement(r) for r in doc["project"]["dependencies"]]
    return {r.name: r for r in reqs if r.marker is None or r.marker.evaluate()}


def test_click_is_pinned_below_9_and_typer_below_0_17():
    deps = declared()
    assert "click" in deps and not deps["click"].specifier.contains("9.0") and deps["click"].specifier.contains("8.5.1")
    assert not deps["typer"].specifier.contains("0.17.0")  # the start-up constraint in pyproject.toml


@pytest.mark.parametrize("name", ["click", "typer", "rich", "numpy", "scipy", "torch"])
def test_installed_versions_are_inside_the_declared_ranges(name):
    req = declared()[name]
    installed = metadata.version(name)
    assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} is outside {req}"


def test_no_click_deprecation_reaches_a_release_we_allow(tmp_path):
    """Every DeprecationWarning from click that starting and running the CLI raises (a fresh interpreter, all
    warnings shown) names a removal at or past click 9, which the pin excludes; none comes from bsadvisor's
    own code."""
    script = ("import warnings, sys\nwarnings.simplefilter('always')\n"
              "from bsadvisor.cli import main\n"
              "for argv in (['--help'], ['validate', '--help'], ['convert-schedule', '--lr', '0.1', '--batch-size', "
              "'8', '--dataset-size', '1000', '--epochs', '3', '--schedule', 'MultiStepLR(milestones=[1], gamma=0.1)']):\n"
              "    try:\n        main(argv)\n    except SystemExit:\n        pass\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env=cli_env(), timeout=120)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    found = [ln for ln in r.stderr.splitlines() if "DeprecationWarning" in ln and "lick" in ln]
    for line in found:
        assert "/bsadvisor/" not in line.split(":")[0], line  # not raised by our code
        removal = re.search(r"removed in Click (\d+)", line)
        assert removal is not None and int(removal.group(1)) >= 9, line
    assert "Usage" in r.stdout or "Recommended plan" in r.stdout
