"""The project's docs stand alone: code and docs cite docs/concepts.md, never a file users don't have."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_cites_a_private_theory_file():
    files = [*ROOT.glob("bsadvisor/**/*.py"), *ROOT.glob("docs/**/*.md"), ROOT / "README.md"]
    hits = [str(f.relative_to(ROOT)) for f in files if "theory.md" in f.read_text()]
    assert not hits


def test_cited_equation_numbers_exist_in_concepts():
    concepts = (ROOT / "docs/concepts.md").read_text()
    numbered = {int(n) for n in re.findall(r"^    .*\((\d+)\)\s*$", concepts, re.M)}
    assert numbered == set(range(1, max(numbered) + 1))
    cited = set()
    for f in [*ROOT.glob("bsadvisor/**/*.py"), *ROOT.glob("docs/**/*.md")]:
        for m in re.finditer(r"concepts\.md\)? eqs?\. (\d+)(?:[–-](\d+))?", f.read_text()):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            cited |= set(range(lo, hi + 1))
    assert cited and cited <= numbered, cited - numbered
