"""The container files agree with the rest of the repository (no Docker engine runs here).

The Dockerfile installs exactly requirements.lock (the pins pyproject is checked against), with the
Python that pyproject requires, as a non-root user, with data/ and mlruns/ as volumes; hadolint is
clean; compose.yaml parses and its MLflow flags exist in the installed MLflow.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from e2fgvi.doctor import dvc_vars

BIN = Path(sys.executable).parent


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comment lines dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return result


@pytest.fixture(scope="module")
def docker(repo_root) -> list[tuple[str, str]]:
    return instructions((repo_root / "Dockerfile").read_text())


def _all(docker, keyword: str) -> list[str]:
    return [args for key, args in docker if key == keyword]


def _args(docker) -> dict[str, str]:
    return dict(a.split("=", 1) for a in _all(docker, "ARG") if "=" in a)


def test_base_image_is_cuda_runtime_pinned_by_tag_and_digest(docker, repo_root):
    (base,) = _all(docker, "FROM")
    pattern = r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu(\d+\.04)@sha256:[0-9a-f]{64}"
    match = re.fullmatch(pattern, base)
    assert match, f"base must be a CUDA cuDNN runtime on an Ubuntu LTS, by tag and digest: {base}"
    lock = (repo_root / "requirements.lock").read_text()
    runtime = re.search(r"^nvidia-cuda-runtime==(\d+)\.(\d+)\.", lock, re.MULTILINE)
    assert match.group(1, 2) == runtime.group(1, 2), "base CUDA must match torch's CUDA wheels"


def test_python_version_agrees_with_pyproject(docker, repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    runs = " ".join(_all(docker, "RUN"))
    venv = re.findall(r"python(3\.\d+) -m venv /opt/venv", runs)
    assert len(venv) == 1, "exactly one venv, made by an explicit python3.X"
    assert SpecifierSet(project["requires-python"]).contains(f"{venv[0]}.0")
    assert f"python{venv[0]}-venv" in runs


def test_dependencies_come_only_from_the_lock(docker):
    runs = " && ".join(_all(docker, "RUN"))
    installs = [c.strip() for c in re.split(r"&&|;|\|", runs) if re.search(r"\bpip3? install", c)]
    assert installs == [
        "pip install --no-cache-dir -r requirements.lock",
        "pip install --no-cache-dir --no-deps --no-build-isolation -e .",
    ]
    copies = _all(docker, "COPY")
    lock_copy = next(i for i, c in enumerate(copies) if "requirements.lock" in c)
    assert "pyproject.toml" in copies[lock_copy]
    assert not re.search(r"pip3? install[^&]*==", runs), "a pinned install bypasses the lock"


def test_non_root_user_volumes_and_default_command(docker, repo_root):
    args = _args(docker)
    user = _all(docker, "USER")[-1]
    resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], user)
    assert resolved.split(":")[0] not in {"0", "root"}
    workdir = _all(docker, "WORKDIR")[-1]
    volumes = json.loads(_all(docker, "VOLUME")[-1])
    for name, path in dvc_vars(repo_root / "dvc.yaml").items():
        # reports: small DVC metrics kept in git; plan: a params file of the checkout itself
        if name not in {"reports", "plan"}:
            top = f"{workdir}/{Path(path).parts[0]}"
            assert top in volumes, f"dvc.yaml var {name}={path} is not under a volume"
    assert json.loads(_all(docker, "CMD")[-1]) == ["dvc", "repro"]
    assert re.search(r"apt-get install [^&]*\bgit\b", " ".join(_all(docker, "RUN")))


def test_dockerignore_keeps_data_and_environments_out(repo_root):
    lines = (repo_root / ".dockerignore").read_text().splitlines()
    entries = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {"data", "mlruns", ".venv", ".dvc/cache", "reports", ".git"} <= entries


def test_hadolint_is_clean(repo_root):
    done = subprocess.run([BIN / "hadolint", "Dockerfile"], cwd=repo_root, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- compose.yaml


@pytest.fixture(scope="module")
def compose(repo_root) -> dict:
    return yaml.safe_load((repo_root / "compose.yaml").read_text())


@cache
def _mlflow_server_help() -> str:
    done = subprocess.run([BIN / "mlflow", "server", "--help"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return done.stdout


def _accepted(flag: str) -> bool:
    """The installed ``mlflow server`` documents this option (its help lists ``-h, --host``)."""
    return bool(re.search(rf"^\s+(-\w, )?{flag}\b", _mlflow_server_help(), re.MULTILINE))


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_compose_mlflow_service(compose):
    mlflow = compose["services"]["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    assert _option(command, "--workers") == "1" and "--serve-artifacts" in command
    assert _option(command, "--backend-store-uri").startswith("sqlite:////workspace/mlruns/")
    assert "mlflow:5000" in _option(command, "--allowed-hosts").split(",")
    assert all(port.startswith("127.0.0.1:") for port in mlflow["ports"])
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    assert any(v.endswith(":/workspace/mlruns") for v in mlflow["volumes"])
    for flag in (c for c in command if c.startswith("--")):
        assert _accepted(flag), flag


def test_compose_train_service(compose):
    train, mlflow = compose["services"]["train"], compose["services"]["mlflow"]
    assert train["command"] == ["dvc", "repro"]
    port = _option(mlflow["command"], "--port")
    assert train["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}"
    assert train["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    assert train["depends_on"]["mlflow"]["condition"] == "service_healthy"
    targets = {volume.split(":")[1] for volume in train["volumes"]}
    assert {"/workspace", "/workspace/data", "/workspace/mlruns"} <= targets
    assert train["image"] == mlflow["image"] and train["build"]["context"] == "."


def test_make_ui_uses_the_same_store_and_valid_flags(repo_root):
    text = (repo_root / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", text, re.MULTILINE).group(1)
    command = shlex.split(recipe.replace("\\\n", " "))
    assert "--host" in command and _option(command, "--host") == "127.0.0.1"
    assert _option(command, "--backend-store-uri").endswith("/mlruns/mlflow.db")
    for flag in (c for c in command if c.startswith("--")):
        assert _accepted(flag), flag
