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


# Names architecture.md cites that are other libraries' (torch's, Lightning's, transformers'), not bsadvisor's.
FOREIGN_NAMES = {"clip_grad_norm_", "Trainer.fit", "TrainerCallback", "BatchNorm"}
SUBPACKAGES = ("core", "runtime", "cli", "measure", "targets", "integrations")
FILE_NAME = re.compile(r"\w+\.(?:py|md|json|toml|csv|pt|png)$")


def _defined_names() -> dict[str, str]:
    """Every class, function and assigned name in the package (methods and fields too) -> a module defining it."""
    import ast

    defined: dict[str, str] = {}
    for path in sorted((ROOT / "bsadvisor").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.setdefault(node.name, module)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            defined.update({t.id: module for t in targets if isinstance(t, ast.Name) and t.id not in defined})
    return defined


def _resolves(name: str, defined: dict[str, str]) -> bool:
    """``bsadvisor.x.y`` or ``core.x.y`` imported and read attribute by attribute; ``Plan.options`` read on the
    module that defines ``Plan``; a bare name defined somewhere in the package."""
    import importlib

    parts = name.split(".")
    if len(parts) == 1:
        return name in defined
    if parts[0] in SUBPACKAGES:
        parts = ["bsadvisor", *parts]
    if parts[0] == "bsadvisor":
        for i in range(len(parts), 0, -1):
            try:
                obj, rest = importlib.import_module(".".join(parts[:i])), parts[i:]
                break
            except ImportError:
                continue
    elif parts[0] in defined:
        obj, rest = importlib.import_module(defined[parts[0]]), parts
    else:
        return False
    try:
        for attribute in rest:
            obj = getattr(obj, attribute)
    except AttributeError:
        return False
    return True


def test_architecture_cites_only_paths_and_names_that_exist():
    """Every module path and code name docs/architecture.md cites exists: the paths (``core/plan.py``,
    ``bsadvisor/cli/app.py``), the backticked names (``Plan.options``, ``bsadvisor.validate``,
    ``lengths_given``) and the names in its pipelines (``options_for_target``, ``Validation.write``)."""
    text = (ROOT / "docs/architecture.md").read_text()
    paths = set(re.findall(r"\b(?:bsadvisor/)?(?:%s)/[\w/]*\w\.py\b" % "|".join(SUBPACKAGES), text))
    assert len(paths) > 20, paths
    missing = sorted(p for p in paths if not (ROOT / "bsadvisor" / p.removeprefix("bsadvisor/")).is_file())
    ticked = [m.group(1) for m in re.finditer(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\([^`]*\))?`", text)]
    blocks = "\n".join(re.findall(r"```text\n(.*?)```", text, re.S))
    piped = re.findall(r"(?<![\w./-])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[a-z]+_[a-z_]+\b|[A-Z][a-z]+[A-Z]\w*)", blocks)
    names = {n for n in [*ticked, *piped] if not FILE_NAME.search(n) and n not in FOREIGN_NAMES
             and ("." in n or "_" in n or re.search(r"[a-z][A-Z]", n) or re.fullmatch(r"[A-Z][A-Z0-9_]+", n))}
    assert len(names) > 40, names
    defined = _defined_names()
    missing += sorted(n for n in names if not _resolves(n, defined))
    assert not missing, f"docs/architecture.md cites what does not exist: {missing}"
