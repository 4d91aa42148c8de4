"""``e2fgvi doctor``: the rules on given facts, and the whole command on a small real project."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from e2fgvi.cli import main
from e2fgvi.config import load_params
from e2fgvi.doctor import dvc_vars
from e2fgvi.doctor.checks import (
    WeightNeed,
    arch_supported,
    check_gpus,
    check_nvml,
    check_tools,
    check_torch,
    check_weight,
)
from e2fgvi.doctor.probes import GpuInfo, NvmlFacts, ToolFacts, TorchFacts

ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 79.2, (9, 0))


def _with(params, section: str, **changes):
    return params.model_copy(update={section: getattr(params, section).model_copy(update=changes)})


def _torch(*gpus: GpuInfo) -> TorchFacts:
    return TorchFacts("2.14.1+cu130", "13.0", "9.24.0", ARCHS, list(gpus), "" if gpus else "none")


# --------------------------------------------------------------------------- rules


def test_no_gpu_depends_on_train_device(params):
    statuses = {
        device: [c.status for c in check_gpus(_torch(), _with(params, "train", device=device))]
        for device in ("auto", "cpu", "cuda")
    }
    assert statuses == {"auto": ["warn"], "cpu": ["ok"], "cuda": ["fail"]}


def test_broken_torch_is_one_failure_not_a_gpu_warning(params):
    broken = TorchFacts(error="ModuleNotFoundError: No module named 'torch'")
    assert check_torch(broken).status == "fail"
    assert check_gpus(broken, params) == []


def test_gpu_without_kernels_in_this_torch_build_fails(params):
    v100 = GpuInfo(0, "Tesla V100-SXM2-32GB", 31.7, (7, 0))
    (check,) = check_gpus(_torch(v100), params)
    assert check.status == "fail" and "sm_70" in check.detail
    assert [c.status for c in check_gpus(_torch(H100), params)] == ["ok"]
    assert arch_supported((12, 1), ["sm_90", "compute_90"])  # PTX JIT for a newer GPU
    assert not arch_supported((7, 0), ARCHS)


def test_more_processes_than_gpus_and_bf16_on_old_gpu_fail(params):
    official = load_params(Path(__file__).parents[1] / "params.official.yaml")
    checks = check_gpus(_torch(H100), official)
    assert [c.status for c in checks] == ["ok", "fail"]
    assert "train.nproc_per_node: 1" in checks[1].hint
    t4 = GpuInfo(0, "Tesla T4", 14.6, (7, 5))
    checks = check_gpus(_torch(t4), _with(params, "train", amp="bf16"))
    assert checks[-1].status == "fail" and "bf16" in checks[-1].detail


def test_nvml_rules():
    missing = NvmlFacts(False, "NVML Shared Library Not Found")
    (check,) = check_nvml(missing, _torch(H100))
    assert check.status == "warn" and "NVML Shared Library Not Found" in check.detail
    assert "energy" in check.detail and "--gpus all" in check.hint
    old_driver = NvmlFacts(True, driver="550.54.15", cuda_driver="12.4", device_count=1)
    assert [c.status for c in check_nvml(old_driver, _torch(H100))] == ["ok", "fail"]
    good = NvmlFacts(True, driver="580.65.06", cuda_driver="13.0", device_count=1, energy=True)
    assert [c.status for c in check_nvml(good, _torch(H100))] == ["ok"]
    shim = NvmlFacts(False, "x", deprecated_shim=True)
    assert "pip uninstall pynvml" in check_nvml(shim, _torch())[-1].hint


def test_weight_rules(tmp_path):
    path = tmp_path / "spynet.pth"
    need = WeightNeed("spynet", path, "model.spynet_init is pretrained", False, "u", "", "off: 1")
    missing = check_weight(need)
    assert missing.status == "fail" and str(path) in missing.detail and "off: 1" in missing.hint
    assert check_weight(WeightNeed("spynet", path, "x", True, "u", "", "o")).status == "warn"
    assert check_weight(WeightNeed("i3d", path, "x", False, "u", "no VFID", "o")).status == "warn"
    assert check_weight(WeightNeed("spynet", path, "", False, "u", "", "o")).status == "ok"
    path.write_bytes(b"\0" * 1024)
    assert check_weight(need).status == "ok"


def test_git_rules(repo_root):
    base = {"dvc": "3.67.1", "mlflow": "3.17.2", "git": "/usr/bin/git", "dvc_dir": True}
    no_repo = ToolFacts(**base, git_repo=False, git_commit=False)
    no_commit = ToolFacts(**base, git_repo=True, git_commit=False)
    dvc_yaml = repo_root / "dvc.yaml"
    assert check_tools(no_repo, dvc_yaml, "sqlite://", "")[1].status == "fail"
    assert check_tools(no_commit, dvc_yaml, "sqlite://", "")[1].status == "warn"


# --------------------------------------------------------------------------- the command


@pytest.fixture
def project(tmp_path, repo_root, monkeypatch):
    """A tiny DVC + git project: the repo's dvc.yaml vars, its params.yaml, one commit."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(repo_root / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / ".dvc").mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _edit_params(folder: Path, **sections) -> None:
    raw = yaml.safe_load((folder / "params.yaml").read_text())
    for dotted, value in sections.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))


def _doctor(capsys, *extra: str) -> tuple[int, str]:
    code = main(["doctor", *extra])
    return code, capsys.readouterr().out


def test_sample_profile_is_ready_here(project, capsys):
    code, out = _doctor(capsys)
    assert code == 0, out
    assert "✓ params" in out and "✓ git" in out and "✓ dvc" in out
    assert f"✓ torch   {torch.__version__}" in out
    if not torch.cuda.is_available():
        assert "! gpu" in out and "No GPU here" in out and "Result: ready" in out


def test_json_output_and_tracking_uri(project, capsys):
    code, out = _doctor(capsys, "--json")
    report = json.loads(out)
    assert code == report["exit_code"] == 0
    assert report["torch"]["version"] == torch.__version__
    by_name = {c["name"]: c for c in report["checks"]}
    store = project / dvc_vars(project / "dvc.yaml")["mlruns"] / "mlflow.db"
    assert by_name["mlflow"]["detail"].endswith(f"sqlite:///{store.resolve()}")
    if not torch.cuda.is_available():
        assert report["nvml"]["available"] is False and report["nvml"]["reason"]


def test_pretrained_spynet_missing_fails_with_the_fix(project, capsys):
    _edit_params(project, model__spynet_init="pretrained")
    code, out = _doctor(capsys)
    pretrained = dvc_vars(project / "dvc.yaml")["pretrained"]
    expected = Path(pretrained) / "spynet_20210409-c6c1bd09.pth"
    assert code == 1
    assert f"✗ spynet  {expected} absent but model.spynet_init is pretrained" in out
    assert "model.spynet_init: random" in out and "NOT READY" in out
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"\0" * 2048)
    code, out = _doctor(capsys)
    assert code == 0 and f"✓ spynet  {expected}" in out


def test_spynet_fetched_by_the_pipeline_is_only_a_warning(project, capsys):
    _edit_params(project, model__spynet_init="pretrained")
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["pretrained"]["spynet"]["fetch"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    code, out = _doctor(capsys)
    assert code == 0 and "! spynet" in out and "dvc repro pretrained" in out


def test_flags_override_dvc_yaml_paths(project, capsys, tmp_path):
    _edit_params(project, model__spynet_init="pretrained")
    weights = tmp_path / "elsewhere.pth"
    weights.write_bytes(b"\0" * 10)
    code, out = _doctor(capsys, "--spynet", str(weights))
    assert code == 0 and f"✓ spynet  {weights}" in out


def test_invalid_params_and_missing_git(project, capsys):
    _edit_params(project, train__learning_rate=0.1)
    shutil.rmtree(project / ".git")
    code, out = _doctor(capsys)
    assert code == 1
    assert "✗ params" in out and "train.learning_rate" in out
    assert "✗ git     not a git repository" in out


def test_unreachable_tracking_server_is_a_warning(project, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
    code, out = _doctor(capsys)
    assert code == 0 and "! mlflow" in out and "unreachable" in out
