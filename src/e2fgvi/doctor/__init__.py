"""``e2fgvi doctor``: is this machine (or container) ready to run the pipeline with these params?

Prints a checklist (✓ ready, ! works with a limitation, ✗ blocks the chosen params) covering
Python, torch/CUDA/cuDNN, the GPUs, NVML, the container engine and its GPU flag, DVC + git, MLflow,
the pretrained weight files and params.yaml; ``--json`` gives the same as machine output. Exit
status 1 when a ✗ is present. Facts come from ``e2fgvi.doctor.probes`` (the container from
``e2fgvi.doctor.container``), the rules from ``e2fgvi.doctor.checks``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from e2fgvi.config import Params
from e2fgvi.cpufeatures import cpu_bf16, cpu_model
from e2fgvi.doctor.checks import (
    Check,
    check_cpu_bf16,
    check_gpus,
    check_nvml,
    check_params,
    check_tools,
    check_torch,
    check_weight,
    ok,
    warn,
    weight_needs,
)
from e2fgvi.doctor.container import check_container, probe_container
from e2fgvi.doctor.probes import (
    NvmlFacts,
    TorchFacts,
    probe_nvml,
    probe_tools,
    probe_torch,
    server_health,
)
from e2fgvi.tracking import tracking_uri

MARK = {"ok": "✓", "warn": "!", "fail": "✗"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file to check against")
    parser.add_argument("--dvc-yaml", default="dvc.yaml", help="pipeline whose vars give paths")
    parser.add_argument("--pretrained", help="weights folder (default: dvc.yaml var 'pretrained')")
    parser.add_argument("--spynet", help="SPyNet weight file (default: <pretrained>/<url name>)")
    parser.add_argument("--i3d", help="I3D weight file (default: <pretrained>/<url name>)")
    parser.add_argument("--mlruns", help="MLflow store folder (default: dvc.yaml var 'mlruns')")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


# --------------------------------------------------------------------------- paths and summary


def dvc_vars(dvc_yaml: Path) -> dict[str, str]:
    """The string vars of dvc.yaml (its first-class path definitions); {} when absent."""
    try:
        raw = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    found: dict[str, str] = {}
    for entry in raw.get("vars", []) if isinstance(raw, dict) else []:
        if isinstance(entry, dict):
            found.update({k: v for k, v in entry.items() if isinstance(v, str)})
    return found


def _folder(flag: str | None, var: str | None, root: Path) -> Path | None:
    if flag:
        return Path(flag)
    return root / var if var else None


def weight_paths(
    args: argparse.Namespace,
    params: Params,
    pretrained: Path | None,
    found: dict[str, str] | None = None,
    root: Path = Path("."),
) -> dict[str, Path | None]:
    """Flags win; else dvc.yaml's ``spynet`` / ``i3d`` vars; else <pretrained>/<URL file name>."""
    paths: dict[str, Path | None] = {}
    for name in ("spynet", "i3d"):
        file_name = getattr(params.data.pretrained, name).url.rsplit("/", 1)[-1]
        if getattr(args, name):
            paths[name] = Path(getattr(args, name))
        elif found and found.get(name):
            paths[name] = root / found[name]
        else:
            paths[name] = pretrained / file_name if pretrained and file_name else None
    return paths


def summary(facts: TorchFacts) -> str:
    if facts.gpus:
        names = ", ".join(sorted({g.name for g in facts.gpus}))
        return f"{len(facts.gpus)} GPU(s) visible ({names})."
    return (
        "No GPU here. Works: the sample pipeline (dvc repro with params.yaml), the tests "
        "(make test), the MLflow UI and the cost report. Needs a GPU: the official recipe "
        "(params.official.yaml), measured GPU memory and energy, e2fgvi profile's GPU forecast."
    )


def render(checks: list[Check], note: str) -> str:
    """The human checklist: one line per check, its hint below it, then the verdict."""
    width = max(len(c.name) for c in checks)
    lines = ["e2fgvi doctor", ""]
    for c in checks:
        lines.append(f"  {MARK[c.status]} {c.name:<{width}}  {c.detail}")
        if c.hint:
            lines.append(f"    {'':<{width}}  -> {c.hint}")
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    if failed:
        verdict = f"NOT READY: {failed} blocking problem(s), marked ✗ above"
    else:
        verdict = f"ready, with {warned} warning(s)" if warned else "ready"
    return "\n".join([*lines, "", note, f"Result: {verdict}", ""])


@dataclass(frozen=True)
class Report:
    checks: list[Check]
    torch: TorchFacts
    nvml: NvmlFacts

    @property
    def exit_code(self) -> int:
        return 1 if any(c.status == "fail" for c in self.checks) else 0


def diagnose(args: argparse.Namespace) -> Report:
    """Every check, in checklist order, with the facts they came from."""
    dvc_yaml = Path(args.dvc_yaml)
    root = dvc_yaml.parent
    found = dvc_vars(dvc_yaml)
    version = platform.python_version()
    checks = [ok("python", version) if sys.version_info[:2] == (3, 11) else
              warn("python", version, "requirements.lock is resolved for Python 3.11")]  # fmt: skip
    params, params_check = check_params(Path(args.params))
    checks.append(params_check)
    facts, nvml = probe_torch(), probe_nvml()
    checks += [check_torch(facts), *check_gpus(facts, params), *check_nvml(nvml, facts)]
    checks.append(check_cpu_bf16(params, facts, cpu_model(), cpu_bf16()))

    checks += check_container(probe_container(), len(facts.gpus))
    mlruns = _folder(args.mlruns, found.get("mlruns"), root)
    uri = tracking_uri(mlruns) if mlruns else os.environ.get("MLFLOW_TRACKING_URI", "")
    unreachable = server_health(uri) if uri.startswith(("http://", "https://")) else ""
    checks += check_tools(probe_tools(root), dvc_yaml, uri, unreachable)
    if params is not None:
        pretrained = _folder(args.pretrained, found.get("pretrained"), root)
        needs = weight_needs(params, weight_paths(args, params, pretrained, found, root))
        checks += [check_weight(need) for need in needs]
    return Report(checks, facts, nvml)


def run(args: argparse.Namespace) -> int:
    report = diagnose(args)
    note = summary(report.torch)
    if args.json:
        out = {
            "exit_code": report.exit_code,
            "summary": note,
            "checks": [asdict(c) for c in report.checks],
            "torch": asdict(report.torch),
            "nvml": asdict(report.nvml),
        }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(render(report.checks, note))
    return report.exit_code
