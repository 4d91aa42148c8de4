"""The package's import graph, read from the source (module level AND inside functions).

No import cycle anywhere; the layers measure <- train <- cost hold; training code does not pull
in prepare code; only ``e2fgvi.weights`` calls ``torch.load``; each DVC stage's src deps are
exactly the modules its ``python -m`` command runs (so a report change never makes training stale).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from _imports import (
    closure,
    cycles,
    graph,
    module_files,
    only_docstring_or_constants,
    package_graph,
)
from helpers import ROOT

SRC = ROOT / "src"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _deps_problems(stage: str) -> list[str]:
    """What is wrong with a stage's src deps against the modules ``python -m`` runs."""
    module = re.search(r"python -m (e2fgvi\.stages\.\w+)", STAGES[stage]["cmd"]).group(1)
    files = module_files(SRC)
    ran = {files[name] for name in closure(SRC, module)}
    # A package __init__ holding only a docstring (or constants) runs nothing worth a rerun.
    needed = {f for f in ran if not (f.name == "__init__.py" and only_docstring_or_constants(f))}
    deps = [ROOT / d for d in STAGES[stage]["deps"] if d.startswith("src/")]
    problems = [f"dep {d.relative_to(ROOT)} does not exist" for d in deps if not d.exists()]
    for f in sorted(needed):
        if not any(f == d or d in f.parents for d in deps):
            problems.append(f"runs {f.relative_to(ROOT)} but does not depend on it")
    for d in deps:
        for f in [d] if d.suffix == ".py" else sorted(d.rglob("*.py")):
            if f not in ran:
                problems.append(f"depends on {f.relative_to(ROOT)} but never runs it")
    return problems


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_the_modules_it_runs(stage):
    """Each stage's src deps cover the import closure of its module and nothing else."""
    assert not _deps_problems(stage), _deps_problems(stage)


def test_no_import_cycles_anywhere():
    """Module and sub-package cycles, imports inside functions included."""
    edges = graph(SRC)
    assert cycles(edges) == [] and cycles(package_graph(edges)) == []


def test_measurement_imports_no_training_or_reporting_and_training_no_reporting():
    """measure/ is the bottom layer of the three; train/ may use it, never cost/."""
    for name, targets in graph(SRC).items():
        if name.startswith("e2fgvi.measure"):
            assert not {t for t in targets if t.startswith(("e2fgvi.train", "e2fgvi.cost"))}, name
        if name.startswith("e2fgvi.train"):
            assert not {t for t in targets if t.startswith("e2fgvi.cost")}, name


def test_training_data_code_does_not_reach_prepare_code():
    seen = closure(SRC, "e2fgvi.data.dataset")
    assert "e2fgvi.data.frames" in seen
    assert "e2fgvi.data.prepare" not in seen


def _calls_torch_load(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        func = node.func if isinstance(node, ast.Call) else None
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "load"
            and isinstance(func.value, ast.Name)
            and func.value.id == "torch"
        ):
            return True
    return False


def test_only_the_weights_module_calls_torch_load():
    callers = {name for name, path in module_files(SRC).items() if _calls_torch_load(path)}
    assert callers == {"e2fgvi.weights"}


def test_the_import_graph_sees_imports_inside_functions(tmp_path):
    """The checker itself: a function-level import closes a cycle it must report."""
    package = tmp_path / "e2fgvi"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('"""Doc."""\n__version__ = "0"\n')
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from e2fgvi.sub import b\nimport torch\ntorch.load('x')\n")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    edges = graph(tmp_path)
    assert edges["e2fgvi.a"] == {"e2fgvi.sub.b"} and edges["e2fgvi.sub.b"] == {"e2fgvi.a"}
    assert cycles(edges) == [["e2fgvi.a", "e2fgvi.sub.b"]]
    assert closure(tmp_path, "e2fgvi.a") == {"e2fgvi", "e2fgvi.a", "e2fgvi.sub", "e2fgvi.sub.b"}
    assert only_docstring_or_constants(package / "__init__.py")
    assert not only_docstring_or_constants(package / "a.py")
    assert _calls_torch_load(package / "a.py") and not _calls_torch_load(package / "sub" / "b.py")
