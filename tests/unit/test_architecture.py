"""The dependency rules of ``docs/architecture.md``, enforced on the source.

The rules are read from the two tables of the page's "Dependency rules" section, so the page and
the code cannot drift apart: every ``import`` in ``src/kubeloop`` -- those inside functions
included, those under ``if TYPE_CHECKING:`` not (they never run) -- is checked against them, and
the modules' import graph must have no cycle.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "kubeloop"
PAGE = ROOT / "docs" / "architecture.md"
# What every module may import: the few dependency-free basics.
BASICS = (
    "kubeloop",
    "kubeloop.errors",
    "kubeloop.console",
    "kubeloop.names",
    "kubeloop.charts",
    "kubeloop.cpus",
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import that can run, lazy ones included."""

    def visit(node: ast.AST) -> Iterator[tuple[int, str]]:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                yield from ((child.lineno, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:  # ``from package import submodule`` names the submodule
                    name = f"{child.module}.{alias.name}"
                    yield child.lineno, name if name in MODULES else child.module
            yield from visit(child)

    return visit(ast.parse(path.read_text(encoding="utf-8")))


def _table(heading: str) -> dict[str, tuple[str, ...]]:
    """The two-column table under ``heading``: first column -> the names in the second."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(heading)
    rows: dict[str, tuple[str, ...]] = {}
    for line in text[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or set(cells[0]) <= {"-", " "} or cells[0] in ("package", "library"):
            continue
        names = tuple(re.findall(r"`([\w.]+)`", re.sub(r"\(.*?\)", "", cells[1])))
        for key in re.findall(r"`([\w.]+)`", cells[0]):
            rows[key] = names
    assert rows, f"no table under {heading!r} in {PAGE}"
    return rows


PACKAGE_RULES = _table("### Between kubeloop's parts")
LIBRARY_RULES = _table("### Libraries")


def _owner(module: str, units: list[str]) -> str | None:
    """The longest table entry that ``module`` is or lies in."""
    for unit in sorted(units, key=len, reverse=True):
        full = f"kubeloop.{unit}"
        if module == full or module.startswith(full + "."):
            return unit
    return None


def test_the_tables_name_only_parts_that_exist() -> None:
    named = set(PACKAGE_RULES) | {n for names in PACKAGE_RULES.values() for n in names}
    named |= {n for names in LIBRARY_RULES.values() for n in names}
    missing = sorted(n for n in named if f"kubeloop.{n}" not in MODULES)
    assert not missing, f"docs/architecture.md names parts that do not exist: {missing}"


def test_every_module_belongs_to_a_part_of_the_table() -> None:
    homeless = [m for m in MODULES if m not in BASICS and _owner(m, list(PACKAGE_RULES)) is None]
    assert not homeless, f"add these modules' packages to docs/architecture.md: {homeless}"


def test_parts_import_only_what_the_rules_allow() -> None:
    broken = []
    for module, path in MODULES.items():
        unit = _owner(module, list(PACKAGE_RULES))
        if unit is None:
            continue
        allowed = (unit, *PACKAGE_RULES[unit])
        for line, imported in _imports(path):
            if not imported.startswith("kubeloop") or imported in BASICS:
                continue
            target = _owner(imported, list(PACKAGE_RULES))
            if target is not None and _owner(imported, list(allowed)) is None:
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not broken, "imports the dependency rules forbid:\n" + "\n".join(broken)


@pytest.mark.parametrize("library", sorted(LIBRARY_RULES))
def test_libraries_are_imported_only_where_the_rules_allow(library: str) -> None:
    top = "sklearn" if library == "scikit-learn" else library
    allowed = LIBRARY_RULES[library]
    broken = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for module, path in MODULES.items()
        for line, imported in _imports(path)
        if imported.split(".")[0] == top and _owner(module, list(allowed)) is None
    ]
    assert not broken, f"{library} imported outside {allowed}:\n" + "\n".join(broken)


def test_the_import_graph_has_no_cycle() -> None:
    graph = {
        module: {name for _, name in _imports(path) if name in MODULES and name != module}
        for module, path in MODULES.items()
    }
    done: set[str] = set()

    def cycle_from(module: str, trail: list[str]) -> list[str] | None:
        if module in trail:
            return [*trail[trail.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            found = cycle_from(imported, [*trail, module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = cycle_from(module, [])
        assert found is None, "import cycle: " + " -> ".join(found)


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: a serving module importing pandas and the training package fails."""
    source = tmp_path / "bad.py"
    source.write_text(
        "def f():\n    import pandas\n    from kubeloop.training import workflow\n", "utf-8"
    )
    imported = [name for _, name in _imports(source)]
    assert imported == ["pandas", "kubeloop.training.workflow"]
    assert _owner("kubeloop.serving.model", list(LIBRARY_RULES["pandas"])) is None
    assert _owner("kubeloop.training.workflow", ["serving", *PACKAGE_RULES["serving"]]) is None
