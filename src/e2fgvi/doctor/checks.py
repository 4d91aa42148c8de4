"""The rules of ``e2fgvi doctor``: pure functions from machine facts and params to checks.

A check is ✓ (ok), ! (warn: works with a limitation) or ✗ (fail: blocks the chosen params).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from e2fgvi.config import ConfigError, Params, load_params
from e2fgvi.cpufeatures import Bf16Support
from e2fgvi.doctor.probes import NvmlFacts, ToolFacts, TorchFacts

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the checklist; ``hint`` says what to do (or what it means) when not ok."""

    name: str
    status: Status
    detail: str
    hint: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, hint: str = "") -> Check:
    return Check(name, "warn", detail, hint)


def fail(name: str, detail: str, hint: str) -> Check:
    return Check(name, "fail", detail, hint)


# --------------------------------------------------------------------------- params, torch, GPUs


def check_params(path: Path) -> tuple[Params | None, Check]:
    try:
        params = load_params(path)
    except ConfigError as exc:
        return None, fail("params", str(exc), "fix the key named above")
    train = params.train
    return params, ok(
        "params",
        f"{path} valid: data.source {params.data.source}, model {params.model.variant} "
        f"(spynet_init {params.model.spynet_init}), train.device {train.device}, "
        f"{train.nnodes} node(s) x {train.nproc_per_node} process(es), amp {train.amp}",
    )


def check_torch(facts: TorchFacts) -> Check:
    if facts.error:
        return fail("torch", f"cannot import torch: {facts.error}", "reinstall requirements.lock")
    build = facts.cuda_build or "none (CPU-only build)"
    cudnn = facts.cudnn_version or "none"
    return ok("torch", f"{facts.version}, CUDA build {build}, cuDNN {cudnn}")


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether this torch build has kernels (or JIT-able PTX) for a GPU of this capability."""
    sm = capability[0] * 10 + capability[1]
    if f"sm_{sm}" in arch_list:
        return True
    ptx = [int(a.split("_")[1]) for a in arch_list if a.startswith("compute_")]
    return any(p <= sm for p in ptx)


def _no_gpu(facts: TorchFacts, device: str) -> Check:
    why = f" ({facts.cuda_reason})" if facts.cuda_reason else ""
    if device == "cuda":
        return fail(
            "gpu",
            f"no CUDA device visible{why}, but train.device is cuda",
            "run with a GPU (docker run --gpus all ...) or set train.device: auto",
        )
    if device == "cpu":
        return ok("gpu", "none used: train.device is cpu")
    return warn(
        "gpu",
        f"no CUDA device visible{why}: training runs on the CPU",
        "fine for the sample profile (params.yaml); the official recipe needs GPUs",
    )


def check_gpus(facts: TorchFacts, params: Params | None) -> list[Check]:
    """GPU presence against train.device, per-GPU support, process count and bf16."""
    if facts.error:
        return []  # the torch line already says what is wrong
    train = params.train if params else None
    device = train.device if train else "auto"
    if not facts.gpus:
        return [_no_gpu(facts, device)]
    checks = []
    for gpu in facts.gpus:
        major, minor = gpu.capability
        detail = f"{gpu.index}: {gpu.name}, {gpu.memory_gib:.1f} GiB, capability {major}.{minor}"
        if arch_supported(gpu.capability, facts.arch_list):
            checks.append(ok("gpu", detail))
        else:
            built = " ".join(facts.arch_list)
            checks.append(
                fail(
                    "gpu",
                    f"{detail}: torch {facts.version} has no kernels for sm_{major}{minor} "
                    f"(built for {built})",
                    "use a GPU whose sm_XY is in that list, or a torch build that has it",
                )
            )
    if train is None or device == "cpu":
        return checks
    visible = len(facts.gpus)
    if train.nproc_per_node > visible:
        checks.append(
            fail(
                "gpu",
                f"train.nproc_per_node is {train.nproc_per_node} but {visible} GPU(s) are visible",
                f"set train.nproc_per_node: {visible} or expose more GPUs (--gpus all)",
            )
        )
    if train.amp == "bf16" and any(g.capability < (8, 0) for g in facts.gpus):
        checks.append(
            fail("gpu", "train.amp is bf16 but a GPU predates Ampere (8.0)", "set train.amp: fp16")
        )
    return checks


def check_cpu_bf16(params: Params | None, facts: TorchFacts, cpu: str, bf16: Bf16Support) -> Check:
    """bf16 autocast where training or evaluation runs on a CPU without native bf16: warned."""
    on_cpu = not facts.gpus or (params is not None and params.train.device == "cpu")
    detail = f"{cpu}: {bf16.detail}"
    if bf16.native or not on_cpu:
        return ok("cpu", detail)
    amps = {"train.amp": params.train.amp, "eval.amp": params.eval.amp} if params else {}
    slow = [key for key, amp in amps.items() if amp == "bf16"]
    if slow:
        return warn(
            "cpu",
            f"{detail}; {' and '.join(slow)} bf16 will run emulated, several times slower "
            "than fp32 (docs/speed.md)",
            f"set {' and '.join(slow)}: fp32 on this CPU",
        )
    return ok("cpu", f"{detail}: keep train.amp fp32 here (it is)")


def _major(version: str | None) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def check_nvml(nvml: NvmlFacts, facts: TorchFacts) -> list[Check]:
    """NVML (energy, power, driver) and whether the driver is new enough for torch's CUDA."""
    checks = []
    if not nvml.available and facts.gpus:
        checks.append(
            warn(
                "nvml",
                f"unavailable: {nvml.reason}; GPU energy and power are not measured "
                "(wall time, GPU-hours and peak memory still are)",
                "run the container with --gpus all: the NVIDIA toolkit mounts libnvidia-ml",
            )
        )
    elif not nvml.available:
        checks.append(warn("nvml", f"unavailable: {nvml.reason} (expected without a GPU driver)"))
    else:
        energy = {True: "yes", False: "no (power is integrated)", None: "unknown"}[nvml.energy]
        checks.append(
            ok(
                "nvml",
                f"driver {nvml.driver} (CUDA {nvml.cuda_driver}), {nvml.device_count} GPU(s), "
                f"energy counter: {energy}",
            )
        )
        build, driver = _major(facts.cuda_build), _major(nvml.cuda_driver)
        if build and driver and driver < build:
            checks.append(
                fail(
                    "driver",
                    f"driver supports CUDA {nvml.cuda_driver}, torch needs CUDA {facts.cuda_build}",
                    f"install an NVIDIA driver for CUDA {build}.x (R580 or newer)",
                )
            )
    if nvml.deprecated_shim:
        checks.append(
            warn(
                "pynvml",
                "the deprecated 'pynvml' package is installed: import torch prints a FutureWarning",
                "pip uninstall pynvml (nvidia-ml-py provides the pynvml module)",
            )
        )
    return checks


# --------------------------------------------------------------------------- weights, tools


@dataclass(frozen=True)
class WeightNeed:
    """What the chosen params need of one pretrained file."""

    name: str  # the data.pretrained key: spynet | i3d
    path: Path | None
    needed_by: str  # the setting that needs it, "" when these params do not use it
    fetch: bool
    url: str
    without: str  # what still happens without it; "" when the pipeline cannot run
    switch_off: str  # the setting that removes the need


def check_weight(need: WeightNeed) -> Check:
    """Present, fetched later by the pretrained stage, or missing (✗ only when nothing works)."""
    name, path = need.name, need.path
    if path is None:
        return warn(name, "no path known (no dvc.yaml var 'pretrained')", f"pass --{name} FILE")
    if path.is_file():
        return ok(name, f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if not need.needed_by:
        return ok(name, f"not needed ({need.switch_off}); {path} absent")
    if need.fetch:
        return warn(
            name,
            f"{path} absent; `dvc repro pretrained` downloads it from {need.url}",
            "that needs internet; or put the file at that path yourself",
        )
    fixes = (
        f"set data.pretrained.{name}.fetch: true and run `dvc repro pretrained`, or put the "
        f"file at {path}, or set {need.switch_off}"
    )
    if need.without:
        return warn(name, f"{path} absent: {need.without}", fixes)
    return fail(name, f"{path} absent but {need.needed_by}", fixes)


def weight_needs(params: Params, paths: dict[str, Path | None]) -> list[WeightNeed]:
    spy, i3d = params.data.pretrained.spynet, params.data.pretrained.i3d
    spynet = "model.spynet_init is pretrained" if params.model.spynet_init == "pretrained" else ""
    vfid = "eval.vfid is true" if params.eval.vfid else ""
    no_vfid = "VFID is skipped (PSNR and SSIM are still computed)"
    spynet_off, vfid_off = "model.spynet_init: random", "eval.vfid: false"
    return [
        WeightNeed("spynet", paths["spynet"], spynet, spy.fetch, spy.url, "", spynet_off),
        WeightNeed("i3d", paths["i3d"], vfid, i3d.fetch, i3d.url, no_vfid, vfid_off),
    ]


def _check_git(tools: ToolFacts) -> Check:
    if tools.git is None:
        return fail("git", "git is not installed: dvc repro needs it", "install git")
    if not tools.git_repo:
        return fail(
            "git",
            "not a git repository: dvc repro needs one",
            "mount your checkout, or: git init && git add -A && git commit -m initial",
        )
    if not tools.git_commit:
        return warn(
            "git", "repository without a commit: dvc exp run needs one", "git commit -m initial"
        )
    return ok("git", "work tree with commits (dvc exp run works)")


def check_tools(tools: ToolFacts, dvc_yaml: Path, uri: str, unreachable: str) -> list[Check]:
    """DVC + git (dvc repro needs a git work tree, dvc exp a commit) and MLflow."""
    if tools.dvc is None:
        dvc = fail("dvc", "not installed", "pip install -r requirements.lock")
    elif not dvc_yaml.is_file() or not tools.dvc_dir:
        dvc = fail(
            "dvc",
            f"{tools.dvc}, but no DVC project here ({dvc_yaml} or .dvc/ missing)",
            "run from the repository root (or pass --dvc-yaml)",
        )
    else:
        dvc = ok("dvc", f"{tools.dvc}, project {dvc_yaml.parent.resolve()}")
    if tools.mlflow is None:
        flow = fail("mlflow", "not installed", "pip install -r requirements.lock")
    elif unreachable:
        flow = warn(
            "mlflow",
            f"{tools.mlflow}; server {uri} unreachable ({unreachable}): runs are buffered and "
            "spooled until it is back",
            "start it (docker compose up -d mlflow, or make ui) or unset MLFLOW_TRACKING_URI",
        )
    else:
        flow = ok("mlflow", f"{tools.mlflow}, tracking URI {uri or 'unknown'}")
    return [dvc, _check_git(tools), flow]
