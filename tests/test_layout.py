"""The package's layout: no import cycles among its modules.

A cycle makes import order matter (a module sees its partner half-initialised), forces
imports into function bodies to hide it, and welds modules that should change apart.
Every ``import`` counts, at module level or inside a function (or under
``TYPE_CHECKING``): an import deferred into a function still ties the two modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import siem_plugins

PACKAGE = Path(siem_plugins.__file__).parent

#: Cycles that are known and not yet removed, each as the sorted set of its modules.
#: Empty: a new cycle must be broken, not listed here.
KNOWN_CYCLES: list[frozenset[str]] = []


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source.

    ``from a.b import c`` imports the module ``a.b.c`` if there is one, else ``a.b``
    (``c`` is a name in it); an import of a module nested deeper than the package's
    own modules counts as its innermost known module.
    """

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                targets.append(submodule if submodule in known else module)
        for target in targets:
            resolved = resolve(target)
            if resolved is not None and resolved != name:
                found.add(resolved)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    known = modules(package)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import path around each cycle (a strongly connected component of more than
    one module, or a module that imports itself): ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_around(graph, component) for component in components]


def _path_around(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest import path from the component's first module back to itself."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no path around {sorted(component)}")  # pragma: no cover


def test_the_cycle_finder_reports_a_cycle_with_its_path(tmp_path: Path) -> None:
    """The checker itself: a cycle through a function-level import is found and named."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import thing\n")
    (pkg / "c.py").write_text("import pkg.a\nthing = 1\n")
    (pkg / "d.py").write_text("from pkg import a, c\n")  # imports into the cycle: not in it
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]


def test_no_import_cycles() -> None:
    found = [c for c in cycles(import_graph(PACKAGE)) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_known_cycles_are_still_cycles() -> None:
    """A cycle listed as known but since removed must leave the list."""
    present = {frozenset(c) for c in cycles(import_graph(PACKAGE))}
    assert not [sorted(c) for c in KNOWN_CYCLES if c not in present]


ROOT = PACKAGE.parent
_PY_NAME = re.compile(r"`([\w./]+\.py|\w+/)`")


def test_the_readme_layout_table_names_files_that_exist() -> None:
    """Each ``siem_plugins/...`` row of README's "Where things are" names modules (and
    folders) of that folder that exist."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    missing = []
    rows = [line for line in table.splitlines() if line.startswith("| `siem_plugins/")]
    assert rows
    for row in rows:
        folder, contents = row.split("|")[1:3]
        base = ROOT / folder.strip().strip("`")
        missing += [
            f"{base.name}/{n}" for n in _PY_NAME.findall(contents) if not (base / n).exists()
        ]
    assert not missing, f"README names files that do not exist: {missing}"


def test_the_guides_code_pointers_name_files_that_exist() -> None:
    """The guides' "The code is ..." sentences name files that exist (relative to the
    repository or to ``siem_plugins/``)."""
    missing = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for paragraph in doc.read_text().split("\n\n"):
            if "The code is" not in paragraph:
                continue
            for name in _PY_NAME.findall(paragraph.split("The code is", 1)[1]):
                if not ((ROOT / name).exists() or (PACKAGE / name).exists()):
                    missing.append(f"{doc.name}: {name}")
    assert not missing, f"guides name files that do not exist: {missing}"


def test_the_architecture_page_names_modules_that_exist() -> None:
    """docs/architecture.md's layer table names every module of the package, and only
    modules that exist: a module added or moved without the page is caught here."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    table = page.split("## The layers", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in table.splitlines()[3:]:
        cells = row.split("|")
        if len(cells) < 4:
            continue
        for name in re.findall(r"`([\w/]+(?:\.py|/))`", cells[2] + cells[3]):
            named.add(name.rstrip("/"))
    missing = sorted(n for n in named if not (PACKAGE / n).exists())
    assert not missing, f"architecture.md names what does not exist: {missing}"
    top = {p.name for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    unnamed = sorted(top - {n.split("/")[0] for n in named})
    assert not unnamed, f"architecture.md does not place: {unnamed}"
