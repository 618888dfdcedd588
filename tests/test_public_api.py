"""The public API: every name in ``bsadvisor.__all__`` resolves, and the docs import only those.

Users write ``from bsadvisor import Plan, probe``, never a deep path, so the sub-packages can
move names around without breaking anyone (docs/architecture.md).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import bsadvisor

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md")), *sorted((ROOT / "docs").glob("**/*.py"))]


def defining_module(name: str) -> str:
    return "bsadvisor." + bsadvisor._LAZY[name].partition(":")[0]


@pytest.mark.parametrize("name", sorted(bsadvisor._LAZY))
def test_public_name_resolves(name):
    assert importlib.util.find_spec(defining_module(name)) is not None, defining_module(name)
    assert getattr(bsadvisor, name) is not None
    assert name in dir(bsadvisor)


def test_all_lists_every_public_name():
    assert set(bsadvisor.__all__) == set(bsadvisor._LAZY) | set(bsadvisor._NAMESPACES) | {"__version__"}
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        bsadvisor.not_a_name


def test_type_checkers_see_every_lazy_name_where_it_is_defined():
    """The TYPE_CHECKING imports name each lazy name from the module _LAZY loads it from."""
    import ast

    tree = ast.parse((ROOT / "bsadvisor" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen, namespaces = {}, set()
    for node in block.body:
        if node.module is None:  # `from . import distributed`: a sub-module namespace
            namespaces.update(alias.name for alias in node.names)
            continue
        for alias in node.names:
            target = node.module if alias.asname is None else f"{node.module}:{alias.name}"
            seen[alias.asname or alias.name] = target
    assert seen == bsadvisor._LAZY and namespaces == set(bsadvisor._NAMESPACES)


def test_distributed_namespace_loads_on_first_use():
    """``bsadvisor.distributed`` holds the process-group names (they left the top level) and the
    plain ``import bsadvisor`` does not load it, since it imports torch."""
    from test_layout import run_python

    r = run_python("import sys, bsadvisor\n"
                   "print('bsadvisor.distributed' in sys.modules, hasattr(bsadvisor, 'init_from_env'))\n"
                   "d = bsadvisor.distributed\n"
                   "print(d.init_from_env('cpu') == d.Dist() == d.current(), sorted(d.__all__))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["False False", "True ['Dist', 'current', 'init_from_env']"]


def doc_imports() -> list[tuple[str, str]]:
    """(file, imported line) for every ``import bsadvisor...``/``from bsadvisor... import`` in the docs."""
    found = []
    for path in DOCS:
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from\s+bsadvisor[\w.]*\s+import|import\s+bsadvisor)", line):
                found.append((str(path.relative_to(ROOT)), line.strip()))
    return found


def test_docs_import_from_the_top_level_only():
    assert doc_imports(), "expected the docs to show some imports"
    deep = [f"{path}: {line}" for path, line in doc_imports() if re.match(r"(from|import)\s+bsadvisor\.", line)]
    assert not deep, "\n".join(deep)


def test_docs_import_only_public_names():
    unknown = []
    for path, line in doc_imports():
        if line.startswith("from bsadvisor import"):
            names = [n.split(" as ")[0].strip(" ()") for n in line.split("import", 1)[1].split("#")[0].split(",")]
            unknown += [f"{path}: {n}" for n in names if n and n not in bsadvisor.__all__]
    assert not unknown, "\n".join(unknown)


def test_docs_call_only_public_names():
    # prose and code like `bsadvisor.probe(target)`: a call on the package names a public function
    called = {(str(p.relative_to(ROOT)), m) for p in DOCS for m in re.findall(r"\bbsadvisor\.(\w+)\(", p.read_text())}
    unknown = sorted(f"{path}: bsadvisor.{name}(" for path, name in called if name not in bsadvisor.__all__)
    assert not unknown, "\n".join(unknown)


def test_docs_call_only_names_of_the_distributed_namespace():
    from bsadvisor import distributed

    called = {(str(p.relative_to(ROOT)), m) for p in DOCS
              for m in re.findall(r"\bbsadvisor\.distributed\.(\w+)\(", p.read_text())}
    assert {name for _, name in called} >= {"init_from_env", "current"}, called
    unknown = sorted(f"{path}: bsadvisor.distributed.{name}(" for path, name in called if name not in distributed.__all__)
    assert not unknown, "\n".join(unknown)
