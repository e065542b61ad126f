"""The house rules, read from the source with `ast` (every import: module level and inside functions).

- optuna (and optuna_dashboard) only under aeopt/search/ and aeopt/cli/;
- packages in the order config < training < stages < search < report < cli: a module imports its
  own package and packages to its left, plus the root leaves errors, files, progress, threads,
  allocator, figures (which import no aeopt package; figures may import files, files and threads
  errors); aeopt/__init__.py and __main__.py are entry points and exempt;
- no import cycle between aeopt modules (module-level imports, those that run on import);
- no plotting (matplotlib, plotly) under aeopt/training/.

Each failure names the file, the line and the import. The checks are functions of
(module name, source) so that the last tests can show each one catching a planted violation.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import aeopt

SRC = Path(aeopt.__file__).resolve().parent
PACKAGES = ("config", "training", "stages", "search", "report", "cli")
# threads may raise the CLI's one-line error (a bad AEOPT_MAX_THREADS), as files does: errors imports nothing.
LEAVES = {"errors": set(), "files": {"errors"}, "progress": set(), "threads": {"errors"}, "switches": set(),
          "allocator": {"switches"}, "figures": {"files"}, "machine": set()}
ENTRY_POINTS = {"aeopt", "aeopt.__main__"}
OPTUNA = {"optuna", "optuna_dashboard"}
OPTUNA_HOMES = {"search", "cli"}
PLOTTING = {"matplotlib", "plotly"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. aeopt.training.engine
    path: str  # its file, relative to the repository root
    line: int
    target: str  # what it imports: a module, or the package a name comes from
    top_level: bool  # runs on import (not inside a function, not under `if TYPE_CHECKING:`)

    def where(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path = SRC) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, source: str, path: str, *, is_package: bool = False,
               known: frozenset[str] | set[str] = frozenset()) -> list[Import]:
    """Every import in `source`; `from P import m` targets the module P.m when `known` has it."""
    found: list[Import] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(module, path, child.lineno, a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, is_package, child)
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    found.append(Import(module, path, child.lineno, sub if sub in known else base, top))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
            else:
                visit(child, top)

    visit(ast.parse(source, filename=path), True)
    return list(dict.fromkeys(found))  # `from m import a, b` names m once


def _collect(root: Path = SRC) -> list[Import]:
    modules = all_modules(root)
    known = set(modules)
    out: list[Import] = []
    for name, path in modules.items():
        rel = str(path.relative_to(root.parent))
        is_package = path.name == "__init__.py"
        out.extend(imports_of(name, path.read_text(), rel, is_package=is_package, known=known))
    return out


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return _collect()


# ----- the rules, as functions of imports ----------------------------------------------------------


def _top(name: str) -> str:
    return name.split(".")[0]


def _home(module: str) -> str | None:
    """The aeopt package or root leaf a module belongs to (None for the root package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def optuna_violations(imports: list[Import]) -> list[str]:
    return [f"{i.where()}: optuna is imported only under aeopt/search/ and aeopt/cli/"
            for i in imports if _top(i.target) in OPTUNA and _home(i.module) not in OPTUNA_HOMES]


def plotting_violations(imports: list[Import]) -> list[str]:
    return [f"{i.where()}: training/ does no plotting (figures belong to stages/, search/, report/)"
            for i in imports if _top(i.target) in PLOTTING and _home(i.module) == "training"]


def _allowed(home: str, target_home: str | None) -> tuple[bool, str]:
    """May a module of `home` import one of `target_home`? And the rule, in words."""
    if home in LEAVES:
        allowed = LEAVES[home]
        rule = f"{home}.py is a root leaf and imports " + (f"only aeopt.{', '.join(allowed)}" if allowed
                                                          else "no aeopt module")
        return target_home in allowed, rule
    left = PACKAGES[: PACKAGES.index(home) + 1]
    rule = f"{home}/ may import only {', '.join(left)} and the root leaves {', '.join(LEAVES)}"
    if target_home is None:  # `from aeopt import __version__`: the root package holds no code
        return True, rule
    return target_home in left or target_home in LEAVES, rule


def order_violations(imports: list[Import]) -> list[str]:
    out = []
    for i in imports:
        if _top(i.target) != "aeopt" or i.module in ENTRY_POINTS:
            continue
        home, target_home = _home(i.module), _home(i.target)
        if home not in PACKAGES and home not in LEAVES:
            out.append(f"{i.module}: not in a known package; add it to PACKAGES or LEAVES in {__file__}")
            continue
        if home == target_home:
            continue
        ok, rule = _allowed(home, target_home)
        if not ok:
            out.append(f"{i.where()}: {rule}")
    return out


def _components(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, 1972); recursive: the graph is a few dozen modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            cut = stack.index(v)
            components.append(stack[cut:])
            del stack[cut:]

    for v in list(graph):
        if v not in index:
            visit(v)
    return components


def cycles(imports: list[Import]) -> list[str]:
    """Each cycle of module-level aeopt imports (a component of more than one module, or a module
    importing itself), with the imports that close it."""
    edges = [i for i in imports if i.top_level and _top(i.target) == "aeopt"]
    graph: dict[str, list[str]] = {}
    for e in edges:
        graph.setdefault(e.module, []).append(e.target)
    out = []
    for comp in _components(graph):
        inside = [e for e in edges if e.module in comp and e.target in comp]
        if len(comp) > 1 or inside:
            closing = "; ".join(e.where() for e in inside)
            out.append(f"import cycle among {', '.join(sorted(comp))}: {closing}")
    return out


def _fail(violations: list[str]) -> None:
    assert not violations, f"{len(violations)} violation(s):\n" + "\n".join(violations)


# ----- the house ---------------------------------------------------------------------------------


def test_the_parser_sees_the_house(imports: list[Import]) -> None:
    # Guards the checks below against passing on nothing: the known imports are found.
    targets = {(i.module, i.target) for i in imports}
    assert ("aeopt.training.engine", "aeopt.config") in targets
    assert any(i.module.startswith("aeopt.search.") and _top(i.target) == "optuna" for i in imports)
    assert set(PACKAGES) | set(LEAVES) >= {_home(m) for m in all_modules() if m not in ENTRY_POINTS}


def test_optuna_only_in_search_and_cli(imports: list[Import]) -> None:
    _fail(optuna_violations(imports))


def test_packages_import_only_to_their_left(imports: list[Import]) -> None:
    _fail(order_violations(imports))


def test_no_import_cycle(imports: list[Import]) -> None:
    _fail(cycles(imports))


def test_no_plotting_in_training(imports: list[Import]) -> None:
    _fail(plotting_violations(imports))


# ----- the checks catch what they should (planted sources) ---------------------------------------


def _planted(*modules: tuple[str, str]) -> list[Import]:
    known = {name for name, _ in modules} | set(all_modules())
    return [i for name, src in modules
            for i in imports_of(name, src, name.replace(".", "/") + ".py", known=known)]


def test_checks_catch_planted_violations() -> None:
    lazy = "def f():\n    import optuna\n    from aeopt.search import storage\n    import matplotlib.pyplot\n"
    found = _planted(("aeopt.training.bad", lazy))
    assert [v.split(":")[:2] for v in optuna_violations(found)] == [["aeopt/training/bad.py",
                                                                     "2 imports optuna"]]
    assert any("aeopt/training/bad.py:3 imports aeopt.search.storage" in v for v in order_violations(found))
    assert plotting_violations(found) and "matplotlib.pyplot" in plotting_violations(found)[0]

    leaf = _planted(("aeopt.errors", "from aeopt.config import RunConfig\n"),
                    ("aeopt.figures", "from aeopt.files import atomic_write_bytes\n"))
    expected = [["aeopt/errors.py", "1 imports aeopt.config"]]
    assert [v.split(":")[:2] for v in order_violations(leaf)] == expected

    search = "import optuna\nfrom aeopt.training.engine import fit\nfrom aeopt import files\n"
    ok = _planted(("aeopt.search.x", search),
                  ("aeopt.cli.x", "import optuna_dashboard\nfrom aeopt.report import build\n"))
    assert optuna_violations(ok) == order_violations(ok) == []


def test_cycle_check_uses_module_level_imports_only() -> None:
    a = ("aeopt.search.a", "from aeopt.search.b import x\n")
    assert len(cycles(_planted(a, ("aeopt.search.b", "from aeopt.search import a\n")))) == 1
    assert "aeopt/search/b.py:1 imports aeopt.search.a" in cycles(
        _planted(a, ("aeopt.search.b", "from aeopt.search import a\n")))[0]
    # A function-level import runs later, when both modules exist: no cycle.
    assert cycles(_planted(a, ("aeopt.search.b", "def f():\n    from aeopt.search import a\n"))) == []
    assert cycles(_planted(a, ("aeopt.search.b", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                 "    from aeopt.search.a import y\n"))) == []


def test_relative_imports_resolve() -> None:
    source = "from .data import add_noise\nfrom ..config import RunConfig\n"
    found = imports_of("aeopt.training.engine", source, "aeopt/training/engine.py",
                       known={"aeopt.training.data"})
    assert [i.target for i in found] == ["aeopt.training.data", "aeopt.config"]
