"""The house rules, checked on the source: data flows one way (moby -> containerd -> index ->
sync -> store -> service -> command line), one package speaks SQL, the command line reaches the
index and the sync only through the library, modules stay small, and nothing imports in
a circle. docs/architecture.md explains the layout these rules keep."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "imagestore"
# Lower layers never import higher ones.
LAYERS = ["imagestore.errors", "imagestore.moby", "imagestore.containerd", "imagestore.index",
          "imagestore.sync", "imagestore.reading", "imagestore.saving", "imagestore.store",
          "imagestore.service", "imagestore.opening", "imagestore.cli"]
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    return {id(node) for top in tree.body if isinstance(top, ast.If)
            and isinstance(top.test, ast.Name) and top.test.id == "TYPE_CHECKING"
            for node in ast.walk(top)}


def _imports(path: Path, *, run_only: bool = False) -> set[str]:
    """Modules a file imports; ``from package import module`` names the module alone.
    ``run_only``: leave out the imports that only type checkers see."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    skip = _type_only(tree) if run_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py")
                          .exists() or (PACKAGE.parent / sub.replace(".", "/")).is_dir()
                          else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _layer(module: str) -> int | None:
    for i, prefix in reversed(list(enumerate(LAYERS))):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return None


MODULES = _modules()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_higher_layer(name: str) -> None:
    mine = _layer(name)
    if mine is None:
        return  # the package's own __init__ re-exports the public API
    upward = sorted(m for m in _imports(MODULES[name])
                    if (theirs := _layer(m)) is not None and theirs > mine)
    assert upward == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_index_speaks_sql(name: str) -> None:
    if name.startswith("imagestore.index"):
        return
    sql = sorted(m for m in _imports(MODULES[name])
                 if m.split(".")[0] in ("sqlalchemy", "sqlite3", "alembic", "psycopg"))
    assert sql == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("imagestore.cli")))
def test_the_command_line_goes_through_the_library(name: str) -> None:
    """``cli/`` parses flags, makes library calls and renders: no SQL, no sync, no docker
    rule of its own (as moby keeps ``ImageDelete`` in daemon/images, never in its CLI)."""
    below = sorted(m for m in _imports(MODULES[name])
                   if m.startswith(("imagestore.index", "imagestore.sync")))
    assert below == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES


def test_no_import_cycle() -> None:
    """Of the imports that run: one a type checker alone follows executes nothing."""
    graph = {name: {m for m in _imports(path, run_only=True) if m in MODULES and m != name}
             for name, path in MODULES.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        seen[name] = 1
        for nxt in sorted(graph[name]):
            assert seen.get(nxt) != 1, " -> ".join([*path, name, nxt])
            if nxt not in seen:
                visit(nxt, [*path, name])
        seen[name] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [])


def test_the_rules_see_the_whole_package() -> None:
    """The checks above would pass vacuously on an empty tree."""
    assert {"imagestore.store", "imagestore.index.writes", "imagestore.sync.restore",
            "imagestore.cli.commands", "imagestore.moby.root", "imagestore.service.delete",
            "imagestore.service.models"} <= MODULES.keys()


def test_every_package_ships_in_a_plain_install() -> None:
    """setuptools lists the packages by name: a folder of modules left out of the list is
    missing from ``pip install .`` (what CI and users run), though a checkout finds it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(PACKAGE.parent).parts)
               for p in PACKAGE.rglob("__init__.py")}
    assert folders - listed == set()

