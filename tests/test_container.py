"""The container files agree with the rest of the repository; doctor's container check.

The Dockerfile's base is its only build-time choice, it installs exactly requirements.lock (the pins
pyproject is checked against), with the Python that pyproject requires, as a non-root user, with
data/ and mlruns/ as volumes; hadolint is clean; compose.yaml parses and its MLflow flags exist in
the installed MLflow; .ci/image.sh hands pip inside a podman build this machine's pip settings.
The image itself is built and run by `make image-test` (CI), not here.
"""

from __future__ import annotations

import json
import os
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
from e2fgvi.doctor.container import (
    ContainerFacts,
    check_container,
    engine_from_mounts,
    probe_container,
)

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


def _env(docker) -> dict[str, str]:
    pairs = [shlex.split(args) for args in _all(docker, "ENV")]
    return dict(p.split("=", 1) for pair in pairs for p in pair)


def test_base_is_the_only_build_argument_before_from_pinned_by_digest(docker):
    """Only the base may differ between a user's build and CI's: an ARG with a pinned default."""
    assert docker[0][0] == "ARG" and docker[1] == ("FROM", "${BASE}")
    assert [key for key, _ in docker].count("FROM") == 1
    name, _, default = docker[0][1].partition("=")
    pattern = r"docker\.io/library/debian:bookworm(-slim)?@sha256:[0-9a-f]{64}"
    assert name == "BASE" and re.fullmatch(pattern, default), default


def test_nvidia_toolkit_settings_require_the_locks_cuda(docker, repo_root):
    """The toolkit refuses a driver too old for torch's CUDA wheels at `docker run`."""
    env = _env(docker)
    lock = (repo_root / "requirements.lock").read_text()
    runtime = re.search(r"^nvidia-cuda-runtime==(\d+)\.(\d+)\.", lock, re.MULTILINE)
    assert env["NVIDIA_REQUIRE_CUDA"] == f"cuda>={runtime.group(1)}.{runtime.group(2)}"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert {"compute", "utility"} <= set(env["NVIDIA_DRIVER_CAPABILITIES"].split(","))


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
    # The lock alone keys the pip layer: a pyproject.toml or code change keeps the torch layer.
    assert copies[lock_copy].split()[1:] == ["requirements.lock", "./"], copies[lock_copy]
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


# --------------------------------------------------------------------------- .ci/image.sh, CI


def test_ci_runs_the_image_test_after_a_disk_check(repo_root):
    ci = (repo_root / ".ci" / "run").read_text()
    commands = [line.split("#")[0].strip() for line in ci.splitlines()]
    order = [c for c in commands if c.startswith(("need_gb=", "make "))]
    assert order == ["need_gb=${E2FGVI_CI_DISK_GB:-32}", "make test", "make test-slow",
                     "make image-test IMAGE_BASE=debian-archive"]  # fmt: skip
    makefile = (repo_root / "Makefile").read_text()
    assert re.search(r"^image-test:\n\tbash \.ci/image\.sh test$", makefile, re.MULTILINE)
    script = (repo_root / ".ci" / "image.sh").read_text()
    # The Dockerfile that users build is the one CI builds: never another file, never rewritten.
    assert not re.search(r"(--file|-f) \S*Dockerfile|sed [^|]*Dockerfile", script)


def test_pip_settings_reach_the_build_through_mounts(repo_root, tmp_path):
    """Local wheel folders, indexes, CA bundle: mounted under /run/host-pip, config rewritten."""
    (tmp_path / "wheels").mkdir()
    (tmp_path / "idx" / "simple").mkdir(parents=True)
    (tmp_path / "ca.crt").write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {
        "PATH": f"{BIN}:{env['PATH']}",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_FIND_LINKS": str(tmp_path / "wheels"),
        "PIP_CERT": str(tmp_path / "ca.crt"),
        "PIP_EXTRA_INDEX_URL": f"file://{tmp_path}/idx/simple https://example.invalid/simple",
    }
    conf = tmp_path / "pip.conf"
    done = subprocess.run(["bash", ".ci/image.sh", "pip-mounts", str(conf)], cwd=repo_root,
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    host = "/run/host-pip"
    assert set(done.stdout.split()) == {
        f"--volume={tmp_path}/wheels:{host}{tmp_path}/wheels:ro",
        f"--volume={tmp_path}/ca.crt:{host}{tmp_path}/ca.crt:ro",
        f"--volume={tmp_path}/idx:{host}{tmp_path}/idx:ro",  # the index's files are siblings
        f"--volume={conf}:/etc/pip.conf:ro",
    }
    text = conf.read_text()
    assert f"find-links = {host}{tmp_path}/wheels" in text
    assert f"cert = {host}{tmp_path}/ca.crt" in text
    assert f"file://{host}{tmp_path}/idx/simple https://example.invalid/simple" in text


# --------------------------------------------------------------------------- doctor, container


DOCKER_MOUNTS = """\
611 590 0:52 / / rw,relatime master:297 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
622 611 254:1 /var/lib/docker/containers/4b1c/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda1 rw
623 611 254:1 /var/lib/docker/containers/4b1c/hostname /etc/hostname rw - ext4 /dev/vda1 rw
"""
PODMAN_MOUNTS = """\
132 126 254:0 /run/containers/storage/overlay-containers/75de/userdata/hosts /etc/hosts rw - ext4 x
"""
K8S_MOUNTS = "9 1 8:1 /var/lib/kubelet/pods/ab/etc-hosts /etc/hosts rw - ext4 /dev/sda1 rw\n"


def test_container_engine_is_told_by_its_mounts_not_marker_files(tmp_path):
    (tmp_path / ".dockerenv").touch()  # left in some VM images: not a container by itself
    assert probe_container(tmp_path) == ContainerFacts("", "", 0)
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / "dev" / name).touch()
    (tmp_path / "proc" / "self" / "mountinfo").write_text(DOCKER_MOUNTS)
    assert probe_container(tmp_path) == ContainerFacts("docker", "", 2)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(PODMAN_MOUNTS)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").write_text('engine="podman-4.3.1"\nname="x"\n')
    assert probe_container(tmp_path) == ContainerFacts("podman", "4.3.1", 2)
    assert engine_from_mounts(K8S_MOUNTS) == "container"
    assert engine_from_mounts("") == ""


def test_container_without_gpus_names_the_engines_flag():
    assert check_container(ContainerFacts(""), 0) == []
    (docker,) = check_container(ContainerFacts("docker"), 0)
    assert docker.status == "warn" and "--gpus all" in docker.hint
    (podman,) = check_container(ContainerFacts("podman", "4.3.1"), 0)
    assert podman.status == "warn" and "podman 4.3.1" in podman.detail
    assert "ignores --gpus all" in podman.hint and "--device nvidia.com/gpu=all" in podman.hint
    assert "nvidia-ctk cdi generate" in podman.hint
    (given,) = check_container(ContainerFacts("podman", "4.3.1", 2), 2)
    assert given.status == "ok" and "2 GPU(s)" in given.detail
