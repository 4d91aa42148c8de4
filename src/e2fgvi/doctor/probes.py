"""Facts about this machine for ``e2fgvi doctor``: torch/CUDA, NVML, DVC, git, MLflow.

Each probe catches its own failures and reports them as data (a reason string), so that the
doctor can say in one line what is missing instead of stopping at the first error.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_gib: float
    capability: tuple[int, int]


@dataclass(frozen=True)
class TorchFacts:
    version: str = ""
    cuda_build: str | None = None  # torch.version.cuda, None for a CPU-only build
    cudnn_version: str | None = None
    arch_list: list[str] = field(default_factory=list)  # kernels compiled into this build
    gpus: list[GpuInfo] = field(default_factory=list)
    cuda_reason: str = ""  # why no GPU is usable, when none is
    error: str = ""  # torch could not be imported at all


@dataclass(frozen=True)
class NvmlFacts:
    available: bool
    reason: str = ""  # why NVML is unavailable
    driver: str = ""
    cuda_driver: str = ""  # newest CUDA version the driver supports, e.g. "13.0"
    device_count: int = 0
    energy: bool | None = None  # cumulative energy counter on GPU 0
    deprecated_shim: bool = False  # the 'pynvml' PyPI shim that makes import torch warn


@dataclass(frozen=True)
class ToolFacts:
    dvc: str | None  # version, None when not installed
    mlflow: str | None
    git: str | None  # path of the git binary
    git_repo: bool  # the folder is inside a git work tree
    git_commit: bool  # ... that has at least one commit
    dvc_dir: bool  # a .dvc folder exists beside dvc.yaml


def _cudnn_text(version: int | None) -> str | None:
    if not version:
        return None
    return f"{version // 10000}.{version // 100 % 100}.{version % 100}"


def _cuda_reason(torch) -> str:
    if torch.version.cuda is None:
        return "CPU-only torch build"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "CUDA_VISIBLE_DEVICES is empty"
    try:
        torch.cuda.init()
    except Exception as exc:
        return str(exc).splitlines()[0].split(". ")[0]
    return "torch sees no CUDA device"


def probe_torch() -> TorchFacts:
    """torch version, its CUDA/cuDNN build, compiled architectures and the visible GPUs."""
    try:
        import torch
    except Exception as exc:
        return TorchFacts(error=f"{type(exc).__name__}: {exc}")
    try:
        cudnn = _cudnn_text(torch.backends.cudnn.version())
    except Exception:
        cudnn = None
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                GpuInfo(index, props.name, props.total_memory / 2**30, (props.major, props.minor))
            )
    return TorchFacts(
        version=torch.__version__,
        cuda_build=torch.version.cuda,
        cudnn_version=cudnn,
        arch_list=list(torch.cuda.get_arch_list()) if torch.version.cuda else [],
        gpus=gpus,
        cuda_reason="" if gpus else _cuda_reason(torch),
    )


def _has_distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _energy_counter(pynvml) -> bool | None:
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(0))
    except pynvml.NVMLError_NotSupported:
        return False
    except pynvml.NVMLError:
        return None
    return True


def probe_nvml() -> NvmlFacts:
    """Driver and CUDA-driver versions through NVML, or the one-line reason it is unavailable."""
    shim = _has_distribution("pynvml")
    try:
        import pynvml
    except ImportError:
        return NvmlFacts(False, "nvidia-ml-py is not installed", deprecated_shim=shim)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return NvmlFacts(False, str(exc), deprecated_shim=shim)
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        count = pynvml.nvmlDeviceGetCount()
        return NvmlFacts(
            True,
            driver=str(pynvml.nvmlSystemGetDriverVersion()),
            cuda_driver=f"{cuda // 1000}.{cuda % 1000 // 10}",
            device_count=count,
            energy=_energy_counter(pynvml) if count else None,
            deprecated_shim=shim,
        )
    except pynvml.NVMLError as exc:
        return NvmlFacts(False, f"NVML query failed: {exc}", deprecated_shim=shim)
    finally:
        pynvml.nvmlShutdown()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_ok(git: str, folder: Path, *args: str) -> bool:
    done = subprocess.run([git, *args], cwd=folder, capture_output=True, check=False)
    return done.returncode == 0


def probe_tools(project: Path) -> ToolFacts:
    """DVC/MLflow versions and the git state of the project folder (the one holding dvc.yaml)."""
    git = shutil.which("git")
    in_repo = bool(git) and project.is_dir() and _git_ok(git, project, "rev-parse", "--git-dir")
    return ToolFacts(
        dvc=_version("dvc"),
        mlflow=_version("mlflow"),
        git=git,
        git_repo=in_repo,
        git_commit=in_repo and _git_ok(git, project, "rev-parse", "--verify", "--quiet", "HEAD"),
        dvc_dir=(project / ".dvc").is_dir(),
    )


def server_health(uri: str, timeout_s: float = 3.0) -> str:
    """'' when an MLflow server answers /health, else the one-line reason."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as reply:
            return "" if reply.status == 200 else f"HTTP {reply.status}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
