"""Cross-file consistency: dvc.yaml <-> params.yaml <-> code <-> pins."""

from __future__ import annotations

import tomllib

import yaml
from _param_reads import leaf_paths, unread_paths

from e2fgvi.config import Params


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
    """Each full key path is read as attributes of the typed config in code outside config.py."""
    unread = unread_paths(repo_root / "src" / "e2fgvi", Params, skip={"config.py"})
    assert not unread, f"params never read by code: {unread}"


def test_param_reads_follow_the_config_types_not_the_names(tmp_path):
    """``.width`` on a ``TrainParams`` reads train.width only; a section passed down counts."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(
        "from e2fgvi.config import HttpParams, TrainParams, load_params\n"
        "def size(cfg: TrainParams):\n"
        "    return cfg.width\n"
        "def fetch(http: HttpParams | None = None):\n"
        "    return http.retries\n"
        "def main():\n"
        "    params = load_params()\n"
        "    fetch(params.data.http)\n"
        "    size(params.train)\n"
        "    masks = params.masks\n"
        "    return masks.height, unknown.eval.width\n"
    )
    (package / "b.py").write_text(
        "from e2fgvi.config import Params\ndef load_params() -> Params: ...\n"
    )
    read = {path for path, _ in leaf_paths(Params)} - set(unread_paths(package, Params, skip=set()))
    assert read == {"train.width", "data.http.retries", "masks.height"}


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
