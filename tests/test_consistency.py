"""Cross-file consistency: dvc.yaml <-> params.yaml <-> code <-> pins."""

from __future__ import annotations

import re
import tomllib

import yaml
from pydantic import BaseModel

from e2fgvi.config import Params


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _leaf_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def _dvc_params(repo_root) -> list[str]:
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    names = []
    for stage in stages.values():
        for entry in stage.get("params", []):
            names += list(entry) if isinstance(entry, dict) else [entry]
    return names


def test_every_dvc_param_exists(repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    for dotted in _dvc_params(repo_root):
        node = raw
        for part in dotted.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml names missing param {dotted}"
            node = node[part]


def test_every_param_is_read_by_code(repo_root):
    """Each leaf key appears as an attribute access in library code outside config.py."""
    sources = [
        p.read_text() for p in (repo_root / "src" / "e2fgvi").rglob("*.py") if p.name != "config.py"
    ]
    code = "\n".join(sources)
    unread = [
        path
        for path in _leaf_paths(Params)
        if not re.search(rf"\.{re.escape(path.rsplit('.', 1)[-1])}\b", code)
    ]
    assert not unread, f"params never read by code: {unread}"


def test_every_stage_param_group_is_used_by_some_stage(repo_root):
    named = _dvc_params(repo_root)
    for group in Params.model_fields:
        assert any(n == group or n.startswith(f"{group}.") for n in named), group


def test_pyproject_pins_match_lock(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["dev"]
    lock = {}
    for line in (repo_root / "requirements.lock").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            lock[name.lower().replace("_", "-")] = version.strip()
    for pin in pins:
        name, version = pin.split("==")
        assert lock.get(name.lower()) == version, (
            f"{name}: pyproject {version}, lock {lock.get(name.lower())}"
        )


def test_no_deprecated_pynvml_shim(repo_root):
    lock = (repo_root / "requirements.lock").read_text().lower()
    assert "\npynvml==" not in lock and "nvidia-ml-py==" in lock
    assert "opencv-python==" not in lock and "opencv-python-headless==" in lock
