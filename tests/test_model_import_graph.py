"""The package's import graph, read from the source (module level AND inside functions).

No import cycles among the model, data, eval and doctor packages and the entry points; training
code does not pull in prepare code; only ``e2fgvi.weights`` calls ``torch.load``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "e2fgvi"
# The parts of the package these checks cover (the others have their own owners' checks).
AREA = ("e2fgvi.model", "e2fgvi.data", "e2fgvi.eval", "e2fgvi.doctor", "e2fgvi.cli")
AREA += tuple(f"e2fgvi.stages.{s}" for s in ("download", "pretrained", "prepare", "masks"))
AREA += ("e2fgvi.stages.evaluate", "e2fgvi.weights", "e2fgvi.devices", "e2fgvi.entry")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an import names: the longest dotted prefix that is a module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module ``module`` imports, wherever the import statement sits."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from the importing module's package
                stem = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*stem, base] if base else stem)
            named += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    resolved = {_resolve(name, modules) for name in named}
    return {m for m in resolved if m and m != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, path, modules) for m, path in modules.items()}


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components (iterative, so deep chains cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _in_area(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in AREA)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert {"a", "b", "c"} in _strongly_connected(graph)
    assert {"d"} in _strongly_connected(graph)


def test_the_walker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "def f():\n    from e2fgvi.model.spynet import flow_warp\nfrom . import sizes\n"
    )
    modules = _modules()
    assert _imports("e2fgvi.model.x", source, modules) == {
        "e2fgvi.model.spynet",
        "e2fgvi.model",
        "e2fgvi.model.sizes",
    }


def test_no_import_cycle_in_model_data_eval_doctor_and_entry_points():
    graph = _graph()
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1 and any(map(_in_area, c))]
    assert cycles == []


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """``start`` and every module it imports, directly or through others."""
    seen, todo = {start}, [start]
    while todo:
        for child in graph[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


def test_training_data_code_does_not_reach_prepare_code():
    seen = _reachable(_graph(), "e2fgvi.data.dataset")
    assert "e2fgvi.data.frames" in seen
    assert "e2fgvi.data.prepare" not in seen


def _src_deps(stage: dict) -> set[str]:
    """The stage's deps under src/, folders expanded to their Python files."""
    files = set()
    for dep in stage["deps"]:
        path = ROOT / dep
        if dep.startswith("src/"):
            found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            files |= {f.relative_to(ROOT).as_posix() for f in found}
    return files


@pytest.mark.parametrize("name", ["download", "pretrained", "prepare", "masks", "evaluate"])
def test_stage_deps_are_exactly_the_modules_it_runs(name):
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"][name]
    modules = _modules()
    assert f"python -m e2fgvi.stages.{name} " in stage["cmd"]
    runs = _reachable(_graph(), f"e2fgvi.stages.{name}")
    assert _src_deps(stage) == {modules[m].relative_to(ROOT).as_posix() for m in runs}


def _calls_torch_load(path: Path) -> bool:
    calls = [
        n.func
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(n, ast.Call)
    ]
    return any(
        isinstance(f, ast.Attribute)
        and f.attr == "load"
        and isinstance(f.value, ast.Name)
        and f.value.id == "torch"
        for f in calls
    )


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _in_area(m)))
def test_only_the_weights_module_calls_torch_load(module):
    assert _calls_torch_load(_modules()[module]) == (module == "e2fgvi.weights")
