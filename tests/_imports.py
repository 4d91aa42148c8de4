"""The import graph of ``src/e2fgvi`` from the AST: imports at module level and inside functions.

Used by the consistency tests (no cycles; each DVC stage's deps equal the modules it runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "e2fgvi"


def module_files(src: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package under ``src``."""
    found = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _absolute(node: ast.ImportFrom, name: str, modules: dict[str, Path]) -> str:
    """The absolute module a (possibly relative) ``from … import`` names."""
    if not node.level:
        return node.module or ""
    base = name if _is_package(name, modules) else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def direct_imports(name: str, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``name`` imports anywhere in its file (functions included).

    ``from pkg import x`` counts ``pkg.x`` when that is a module, else ``pkg`` itself.
    """
    tree = ast.parse(modules[name].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, modules)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in modules}
    found.discard(name)
    return found


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def graph(src: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (explicitly; parent packages not added)."""
    modules = module_files(src)
    return {name: direct_imports(name, modules) for name in modules}


def closure(src: Path, start: str) -> set[str]:
    """Every package module that ``python -m start`` runs (imports inside functions included).

    Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, and whatever they import.
    """
    edges = graph(src)
    seen, stack = {start}, [start]
    while stack:
        name = stack.pop()
        for target in [*edges[name], *_parents(name)]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def only_docstring_or_constants(path: Path) -> bool:
    """True when a file runs nothing but a docstring and literal assignments (``__version__``)."""
    for statement in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant):
            continue
        return False
    return True


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between the package's sub-packages and top modules (``e2fgvi.x``)."""

    def top(name: str) -> str:
        return ".".join(name.split(".")[:2])

    folded: dict[str, set[str]] = {}
    for source, targets in edges.items():
        folded.setdefault(top(source), set()).update(top(t) for t in targets)
    for source, targets in folded.items():
        targets.discard(source)
    return folded
