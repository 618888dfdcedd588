"""The package layout keeps the architecture of docs/architecture.md.

core is pure (no torch, nothing outside core); targets builds on core; runtime on core and
targets; measure on core, targets and runtime; cli on everything; the top-level modules (``__init__``,
``distributed``) re-export them and no sub-package imports those. No import cycles, the CLI's
``app`` imports no command, and long functions say why they are long. The imports are read
with ``ast`` (so an import inside a function counts too), never by importing the modules,
except where the point is what an import really loads.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bsadvisor"

# What each sub-package must never import (docs/architecture.md, "Who may import what").
FORBIDDEN = {
    "core": {"measure", "runtime", "targets", "cli"},
    "targets": {"measure", "runtime", "cli"},
    "runtime": {"measure", "cli"},
    "measure": {"cli"},
    "integrations": {"measure", "cli"},
}
MAX_FUNCTION_LINES = 60
#: A module longer than this holds more than one idea: split it by idea (docs/architecture.md).
MAX_MODULE_LINES = 650
LONG_REASON = "Long because"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def parse(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def import_nodes(tree: ast.AST, top_level_only: bool):
    """The import statements of a module; ``top_level_only``: those that run when it is imported.

    Function bodies run later and ``if TYPE_CHECKING:`` never, so a top-level walk skips
    both; class bodies run at import time and are walked.
    """
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if top_level_only and (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                               or is_type_checking(node)):
            continue
        yield from import_nodes(node, top_level_only)


def imported_names(name: str, top_level_only: bool = False) -> set[str]:
    """Dotted names a module imports: ``from pkg import sub`` counts as ``pkg.sub`` when sub is a module."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in import_nodes(parse(name), top_level_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative import: resolve it against this module's package
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


def internal_imports(name: str, top_level_only: bool = False) -> set[str]:
    """The bsadvisor modules a module imports (each name mapped to the module that defines it)."""
    found = set()
    for imported in imported_names(name, top_level_only):
        while imported and imported not in MODULES:  # `import bsadvisor.core.plan.Plan` style leftovers
            imported = imported.rpartition(".")[0]
        if imported.startswith("bsadvisor"):
            found.add(imported)
    return found


def subpackage(name: str) -> str:
    """``bsadvisor.core.plan`` -> ``core``; the top-level package and ``__main__`` -> ``""``."""
    parts = name.split(".")
    package = f"bsadvisor.{parts[1]}" if len(parts) > 1 else ""
    return parts[1] if package in MODULES and MODULES[package].name == "__init__.py" else ""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


# ---------------------------------------------------------------------------- torch boundary
def test_core_never_imports_torch():
    core = [name for name in MODULES if subpackage(name) == "core"]
    assert core, "no bsadvisor.core modules found"
    code = ("import importlib, sys\n"
            f"for name in {core!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"importing bsadvisor.core loads torch: {r.stdout.strip()}"


def test_core_has_no_torch_import_even_inside_functions():
    offenders = {name: sorted(n for n in imported_names(name) if n == "torch" or n.startswith("torch."))
                 for name in MODULES if subpackage(name) == "core"}
    assert not {name: mods for name, mods in offenders.items() if mods}


def test_cli_and_public_pure_names_import_no_torch():
    # what `convert-schedule` and every command's option checks load before any work
    code = ("import sys, bsadvisor, bsadvisor.cli\n"
            "for name in ('Plan', 'Stage', 'Setting', 'convert_schedule', 'temperature', 'TemperatureModel',\n"
            "             'parse_schedule', 'UserError', 'ProbeResult', 'load_probe'):\n"
            "    getattr(bsadvisor, name)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"import bsadvisor.cli loads torch: {r.stdout.strip()}"


# ---------------------------------------------------------------------------- who may import what
def test_packages_import_only_what_the_architecture_allows():
    violations = []
    for name in MODULES:
        forbidden = FORBIDDEN.get(subpackage(name), set())
        for imported in sorted(internal_imports(name)):
            if subpackage(imported) in forbidden:
                violations.append(f"{name} imports {imported}")
    assert not violations, "\n".join(violations)


def test_no_subpackage_imports_a_top_level_module():
    """``bsadvisor/__init__.py`` and ``bsadvisor/distributed.py`` are façades over the sub-packages (what
    users import); a sub-package importing one would run the layering backwards. The CLI sits on top of
    everything and goes through those public names (``import bsadvisor``), so it alone may."""
    top = {name for name in MODULES if not subpackage(name)}
    assert {"bsadvisor", "bsadvisor.distributed"} <= top
    violations = [f"{name} imports {imported}" for name in MODULES if subpackage(name) not in ("", "cli")
                  for imported in sorted(internal_imports(name) & top)]
    assert not violations, "\n".join(violations)


def public_names() -> dict[str, str]:
    """What ``bsadvisor`` and ``bsadvisor.distributed`` export, read from their source: name -> the public
    spelling (``Plan`` -> ``bsadvisor.Plan``, ``init_from_env`` -> ``bsadvisor.distributed.init_from_env``)."""
    names = {}
    for node in ast.walk(parse("bsadvisor")):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            names.update({key.value: f"bsadvisor.{key.value}" for key in node.value.keys})
    for node in ast.walk(parse("bsadvisor.distributed")):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            names.update({elt.value: f"bsadvisor.distributed.{elt.value}" for elt in node.value.elts})
    return names


def test_cli_reaches_public_names_through_bsadvisor():
    """The CLI imports ``bsadvisor`` at the top and spells every name the package exports publicly as
    ``bsadvisor.Name``: no cli module imports such a name from a deep module (its helpers with no public
    name, cli.app, cli.render, core.declared, ..., stay deep imports)."""
    exported = public_names()
    assert {"Plan", "recommend", "advise", "validate", "Validation", "UserError", "load_target",
            "init_from_env"} <= set(exported)
    cli = [name for name in MODULES if subpackage(name) == "cli"]
    violations = []
    for name in cli:
        for node in import_nodes(parse(name), top_level_only=False):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("bsadvisor.")):
                violations += [f"{name}:{node.lineno} imports {alias.name} from {node.module}; use "
                               f"{exported[alias.name]}" for alias in node.names
                               if alias.name in exported and f"{node.module}.{alias.name}" not in MODULES]  # a module
    assert not violations, "\n".join(violations)
    commands = [name for name in cli if name.rpartition(".")[2] in ("advise", "convert", "demo", "export",
                                                                      "probe", "validate", "render", "app")]
    assert len(commands) == 8, commands
    missing = [name for name in commands if "bsadvisor" not in internal_imports(name, top_level_only=True)]
    assert not missing, f"these cli modules do not import bsadvisor at the top: {missing}"


def test_targets_reach_integrations_only_lazily():
    # a TARGET returning a LightningModule is wrapped by integrations.lightning, imported inside
    # the function that needs it: loading a plain TARGET never imports Lightning
    for name in MODULES:
        if subpackage(name) == "targets":
            eager = {m for m in internal_imports(name, top_level_only=True) if subpackage(m) == "integrations"}
            assert not eager, f"{name} imports {sorted(eager)} at import time"


def test_core_imports_nothing_outside_core():
    violations = [f"{name} imports {imported}"
                  for name in MODULES if subpackage(name) == "core"
                  for imported in sorted(internal_imports(name))
                  if subpackage(imported) != "core" or imported == "bsadvisor"]
    assert not violations, "\n".join(violations)


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as [a, b, ..., a], or [] when it is acyclic (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    graph = {name: internal_imports(name, top_level_only=True) - {name} for name in MODULES}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def registers_a_command(name: str) -> bool:
    """A command module: some function decorated with ``@app.command(...)``."""
    for node in ast.walk(parse(name)):
        for decorator in getattr(node, "decorator_list", []):
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if isinstance(target, ast.Attribute) and target.attr == "command":
                return True
    return False


def test_cli_app_imports_no_command():
    commands = {name for name in MODULES if subpackage(name) == "cli" and registers_a_command(name)}
    assert commands, "found no command module under bsadvisor/cli"
    imported = internal_imports("bsadvisor.cli.app")
    assert not imported & (commands | {"bsadvisor.cli"}), sorted(imported & (commands | {"bsadvisor.cli"}))


# ---------------------------------------------------------------------------- function length
def functions():
    """Every function and method of the package: (path, qualified name, node)."""
    for name, path in MODULES.items():
        tree = parse(name)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            qualname, parent = [node.name], parents.get(node)
            while parent is not None and not isinstance(parent, ast.Module):
                if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qualname.insert(0, parent.name)
                parent = parents.get(parent)
            yield path, ".".join(qualname), node


def long_functions() -> list[str]:
    """Functions and methods over MAX_FUNCTION_LINES lines whose docstring gives no reason."""
    found = []
    for path, qualname, node in functions():
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {qualname} ({lines} lines)")
    return found


def test_no_long_function_without_a_reason():
    offenders = long_functions()
    assert not offenders, (f"over {MAX_FUNCTION_LINES} lines with no '{LONG_REASON} ...' in the docstring:\n"
                           + "\n".join(offenders))


def long_modules() -> list[str]:
    """Modules of the package over MAX_MODULE_LINES lines."""
    found = []
    for path in MODULES.values():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    return found


def test_long_modules_finds_one(tmp_path, monkeypatch):
    long = tmp_path / "long.py"
    long.write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    short = tmp_path / "short.py"
    short.write_text("x = 1\n" * MAX_MODULE_LINES)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {"long": long, "short": short})
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert long_modules() == [f"long.py ({MAX_MODULE_LINES + 1} lines)"]


def test_no_module_over_650_lines():
    offenders = long_modules()
    assert not offenders, f"over {MAX_MODULE_LINES} lines: split by idea\n" + "\n".join(offenders)


def test_no_import_cycle_inside_core_counting_function_level_imports():
    """core/ is the pure base everything stands on: no cycle among its modules even through a lazy import
    inside a function (those hide an order dependency that the top-level check does not see)."""
    core = [name for name in MODULES if name.startswith("bsadvisor.core.")]
    graph = {name: {m for m in internal_imports(name) if m.startswith("bsadvisor.core.")} - {name} for name in core}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle inside core (function-level imports count): " + " -> ".join(cycle)


# ---------------------------------------------------------------------------- parameter count
#: Outside cli/ a function takes at most this many parameters; more travel together as an options
#: object (ConvertOptions, ProbeOptions, ValidateOptions). The CLI's commands declare typer's options.
MAX_PARAMETERS = 12
EXEMPT_FROM_PARAMETER_COUNT = PACKAGE / "cli"


def parameter_count(node: ast.AST) -> int:
    """Positional-only, ordinary and keyword-only parameters, plus *args and **kwargs; a leading self or
    cls is not counted."""
    a = node.args
    names = [arg.arg for arg in a.posonlyargs + a.args]
    count = len(names) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    return count - (names[:1] in (["self"], ["cls"]))


def test_parameter_count_counts_every_kind():
    tree = ast.parse("def f(a, /, b, *c, d, **e): pass\n"
                     "class K:\n    def m(self, a, *, b): pass\n    def n(cls): pass\n")
    f, m, n = (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef))
    assert (parameter_count(f), parameter_count(m), parameter_count(n)) == (5, 2, 0)


def test_no_function_outside_cli_takes_more_than_12_parameters():
    offenders = [f"{path.relative_to(ROOT)}:{node.lineno} {qualname} ({parameter_count(node)} parameters)"
                 for path, qualname, node in functions()
                 if EXEMPT_FROM_PARAMETER_COUNT not in path.parents and parameter_count(node) > MAX_PARAMETERS]
    assert not offenders, (f"over {MAX_PARAMETERS} parameters outside bsadvisor/cli/ (pass an options object "
                           "instead):\n" + "\n".join(offenders))


# ---------------------------------------------------------------------------- a plan's inputs
#: The one module that reads a plan's recorded ``inputs``: everyone else reads the typed ``Plan.options``.
INPUTS_OWNER = "bsadvisor.core.plan"


def inputs_reads(tree: ast.AST) -> list[int]:
    """The lines where ``tree`` reads an attribute ``.inputs`` (of anything: a plan, a copy, ``self``)."""
    return sorted(node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "inputs")


def test_inputs_reads_finds_one():
    tree = ast.parse("a = plan.inputs.get('lr')\nb = Plan(inputs={})\nc = x.inputs['k']\nd = replace(p, inputs=q)\n")
    assert inputs_reads(tree) == [1, 3]


def test_no_inputs_read_outside_the_plan_module():
    """A plan's ``inputs`` are read in core/plan.py only (``Plan.options`` types, checks and migrates them); a
    reader elsewhere would bring back the private fallback defaults that made two readers disagree."""
    offenders = [f"{MODULES[name].relative_to(ROOT)}:{line}" for name in MODULES if name != INPUTS_OWNER
                 for line in inputs_reads(parse(name))]
    assert not offenders, "reads .inputs outside core/plan.py (use Plan.options):\n" + "\n".join(offenders)


# ---------------------------------------------------------------------------- one declaration per option
def test_no_locals_in_the_package():
    """A command builds its options from what it parsed (core.declared, cli.options.with_options), never by
    filtering ``locals()``: a renamed parameter then fails where it is declared, not silently at run time."""
    found = [f"{name}:{node.lineno}" for name in MODULES for node in ast.walk(parse(name))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("locals", "vars")
             and not node.args]
    assert not found, found


#: The convert-schedule parameters that are no conversion option: the command's own.
CONVERT_COMMAND_OWN = {"config", "json_", "out", "overwrite"}


def _string_constants(name: str) -> set[str]:
    return {node.value for node in ast.walk(parse(name)) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_every_conversion_option_is_declared_once():
    """Each conversion option's type, range, default, help, flag and groups are declared once (ConvertOptions'
    field metadata, core.options.PLANNING_OPTIONS); the typer parameters, the --config spec, the plan file's
    INPUTS_SPEC and the name groups are derived from them, never written again."""
    import typer.main

    import bsadvisor.cli  # noqa: F401  (registers the commands)
    from bsadvisor.cli import advise as cli_advise, convert as cli_convert
    from bsadvisor.cli.app import app
    from bsadvisor.core import baseline, options, plan, predict
    from bsadvisor.core.declared import declarations
    from bsadvisor.core.probe_options import ProbeOptions
    from bsadvisor.core.validate_options import ValidateOptions
    from bsadvisor.measure import advise as measure_advise

    declared = options.CONVERSION_OPTIONS
    fields = set(declarations(options.ConvertOptions))
    assert set(declared) == fields | set(options.PLANNING_OPTIONS)
    assert fields == set(options.OPTION_NAMES) - {"noise_cap_batch", "noise_model"}  # what no user types
    # no hand-written flag of a conversion option in the CLI modules that take them all
    flags = {d.flag for d in declared.values()}
    for name in ("bsadvisor.cli.options", "bsadvisor.cli.convert", "bsadvisor.cli.advise"):
        assert not flags & _string_constants(name), (name, sorted(flags & _string_constants(name)))
    # the typer parameters: every declared option, as declared, plus the command's own
    commands = typer.main.get_command(app).commands
    params = {p.name: p for p in commands["convert-schedule"].params}
    assert set(params) == set(declared) | CONVERT_COMMAND_OWN
    for name, d in declared.items():
        assert params[name].opts == [d.flag] and params[name].help == d.help_text and params[name].default is None
    advise_params = {p.name for p in commands["advise"].params}
    assert set(cli_advise.CONVERT_OPTIONS) == {n for n, d in declared.items() if "advise" in d.groups} \
        == advise_params & set(declared)
    validate_params = {p.name for p in commands["validate"].params}
    validate_own = set(declarations(ValidateOptions)) | {"target", "plan", "device", "as_json"}
    assert validate_params - validate_own == {n for n, d in declared.items() if "validate" in d.groups}
    # validate's own options too: declared once on ValidateOptions, whose object the command receives built
    validate_flags = {d.flag for d in declarations(ValidateOptions).values()}
    command = next(node for node in parse("bsadvisor.cli.validate").body
                   if isinstance(node, ast.FunctionDef) and node.name == "validate")
    written = {node.value for node in ast.walk(command) if isinstance(node, ast.Constant)}
    assert validate_flags and not validate_flags & written, validate_flags & written
    probe_params = {p.name for p in commands["probe"].params}
    assert probe_params == set(declarations(ProbeOptions)) | {"target", "json_out", "out", "overwrite"}
    # the --config spec and the plan file's inputs: each option's declared spec
    assert cli_convert._config_spec() == {name: d.spec for name, d in declared.items()}
    inputs = plan.INPUTS_SPEC.fields
    assert set(inputs) == {n for n, d in declared.items() if d.file_spec() is not None} | {"kind"}
    for name in set(inputs) - {"kind"}:
        assert inputs[name].spec == declared[name].file_spec()
    # e.g. growth_factor: one range everywhere (it was unbounded in the plan file)
    assert inputs["growth_factor"].spec.high == cli_convert._config_spec()["growth_factor"].high == 1024
    # the name groups: read from the declarations, not listed again
    assert predict.PLAN_OPTIONS is options.PLAN_OPTIONS
    assert baseline.BASELINE_INPUTS is options.BASELINE_INPUTS
    assert measure_advise.AFTER_PROBE is options.AFTER_PROBE
    assert set(options.PROBE_OPTIONS) == {"probe", "world_size", "grad_accum", "noise_cap", "micro_batch",
                                          "noise_trace"}


def test_no_hand_written_list_of_option_names():
    """No module-level name bound to a tuple, list or set of three or more conversion options: such a list is a
    second declaration of a group (core.options derives the groups from the options' ``groups``)."""
    from bsadvisor.core.options import CONVERSION_OPTIONS

    found = []
    for name in MODULES:
        for node in parse(name).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, (ast.Tuple, ast.List, ast.Set)):
                words = [e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len(words) >= 3 and len(words) == len(value.elts) and set(words) <= set(CONVERSION_OPTIONS):
                    found.append(f"{name}:{node.lineno} {words}")
    assert not found, "\n".join(found)


def test_a_new_option_is_one_declaration(monkeypatch):
    """A conversion option added by one declaration (here a subclass's field, added to the declarations) is
    a typer parameter of the commands in its groups, a --config key and a plan-file field, with no other
    edit; the object checks its range from the same declaration."""
    import dataclasses
    from typing import Optional

    import pytest
    import typer
    import typer.main
    from typer.testing import CliRunner

    from bsadvisor.cli import convert as cli_convert
    from bsadvisor.cli.options import command_options, with_options
    from bsadvisor.core import options, schema as S
    from bsadvisor.core.declared import declarations, option
    from bsadvisor.core.errors import UserError

    @dataclasses.dataclass(frozen=True)
    class Extended(options.ConvertOptions):
        restarts: Optional[int] = option(None, S.Int(low=1, high=8), "Warm restarts of the schedule.",
                                         groups=("advise",))

        def check(self) -> None:
            super().check()
            self._check_declared("restarts", optional=True)

    new = declarations(Extended)["restarts"]
    monkeypatch.setitem(options.CONVERSION_OPTIONS, "restarts", new)
    assert new.flag == "--restarts" and "restarts" in command_options("advise")
    assert "restarts" not in command_options("validate")

    app = typer.Typer()

    @app.command()
    @with_options(command_options("advise"))
    def cmd(options: dict) -> None:
        typer.echo(repr(options["restarts"]))

    params = {p.name: p for p in typer.main.get_command(app).params}
    assert params["restarts"].opts == ["--restarts"] and params["restarts"].help == "Warm restarts of the schedule."
    result = CliRunner().invoke(app, ["--restarts", "3"])
    assert result.exit_code == 0 and result.output.strip() == "3", result.output
    assert cli_convert._config_spec()["restarts"] is new.spec
    assert options.recorded_specs()["restarts"].spec == S.Int(low=1, high=8, nullable=True)
    base = dict(lr=0.1, batch_size=8, dataset_size=64, epochs=2, schedule="StepLR(step_size=1)")
    assert Extended(**base, restarts=2).restarts == 2
    with pytest.raises(UserError, match=r"^restarts must be ≤ 8, got 9$"):
        Extended(**base, restarts=9)


# ---------------------------------------------------------------------------- imports inside functions
#: Imports run inside a function only where they would load torch (or another heavy or optional framework)
#: into a module that must start without it; each says why. The whole package holds at most this many.
MAX_FUNCTION_IMPORTS = 60


def function_imports(tree: ast.AST) -> list[ast.AST]:
    """The import statements inside function bodies (nested functions included, each counted once)."""
    found: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    found[id(inner)] = inner
    return list(found.values())


def test_function_imports_counts_nested_functions_once():
    tree = ast.parse("import os\n"
                     "def f():\n    import sys\n    def g():\n        from json import dumps\n"
                     "class K:\n    import re\n    def m(self):\n        import math\n")
    assert sorted(ast.unparse(n) for n in function_imports(tree)) == ["from json import dumps", "import math",
                                                                      "import sys"]


def test_at_most_60_imports_inside_functions():
    counts = {str(path.relative_to(ROOT)): len(function_imports(parse(name))) for name, path in MODULES.items()}
    counts = {path: n for path, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n}
    assert sum(counts.values()) <= MAX_FUNCTION_IMPORTS, (
        f"{sum(counts.values())} imports inside functions (at most {MAX_FUNCTION_IMPORTS}): import at the module's "
        f"top unless torch or an optional framework must not load there, and say why\n{counts}")


def test_typed_documents_share_one_base():
    """Advice, a run's records and noise points, and the validation are one kind of document: frozen
    dataclasses on core/documents.py's ``Document`` (to_dict for JSON, from_dict, read as a Mapping);
    no module defines a document base of its own."""
    from bsadvisor.core import predict
    from bsadvisor.core.documents import Document
    from bsadvisor.runtime import documents, validation

    kinds = [predict.StartAdvice, predict.StartVariant, predict.KeepBatchAdvice, documents.NoisePoint,
             documents.EpochRecord, documents.StepRecord, documents.EvalPoint, documents.SkippedStep,
             validation.Validation, validation.Run, validation.SeedRun, validation.RunSummary, validation.Verdict,
             validation.VariantVerdict, validation.RealisedTemperature]
    assert [k.__name__ for k in kinds if not issubclass(k, Document)] == []
    bases = [f"{name}.{node.name}" for name in MODULES if name != "bsadvisor.core.documents"
             for node in ast.walk(parse(name)) if isinstance(node, ast.ClassDef) and node.name.endswith("Document")]
    assert bases == [], bases
    advice = predict.StartAdvice(b0=64, b_noise_at_start=512.0, efficiency_at_b0=0.9, plan_updates=10,
                                 variants=(predict.StartVariant(2.0, 128, 5, 0.8, None),))
    doc = advice.to_dict()
    assert doc == {"b0": 64, "b_noise_at_start": 512.0, "efficiency_at_b0": 0.9, "plan_updates": 10,
                   "variants": [{"increase_lr": 2.0, "start_batch": 128, "updates": 5, "efficiency_at_start": 0.8,
                                 "predicted_seconds": None}]}
    assert predict.StartAdvice.from_dict(doc, variants=advice.variants) == advice and advice["b0"] == 64
    # a field the JSON lacks: its default, else None (older files load)
    assert documents.EpochRecord.from_dict({"epoch": 0}).diverged is False
    assert documents.EpochRecord.from_dict({"epoch": 0}).metric is None
