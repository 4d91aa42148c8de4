"""The verdict catches real changes and lets other machines through, on real (shrunk) training.

One shrunk run of the train stage (the sample profile with 2 local + 1 reference frames, 8
iterations) is committed as the reference in a small git + DVC repository whose metrics file is
its ``reports/train.json``, judged by the repository's ``verify.yaml``. Each other run's
``train.json`` is put in the workspace and judged by ``e2fgvi verify --workspace``: the same
settings on an emulated machine (another CPU instruction set as ATen and oneDNN see it, oneDNN
off, another thread count) must be REPRODUCED (exit 0); a changed learning rate, a changed loss
weight, one frame fewer per clip and another seed must each be NOT REPRODUCED (exit 1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run_train, train_env

from e2fgvi import cli

pytestmark = pytest.mark.slow

SHRUNK = {
    "train__num_local_frames": 2,
    "train__num_ref_frames": 1,
    "train__iterations": 8,
    "train__log_every": 1,
    "train__image_every": 1000,
    "train__checkpoint_every": 8,
    "cost__warmup_steps": 1,
    "tracking__experiment": "verify-changes",
    "tracking__retry_interval_s": 0.0,
    "tracking__log_checkpoints": False,
}
_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
MACHINES = {
    "avx2": (_AVX2, ""),
    "no-simd": ({"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}, ""),
    "threads-1": ({"OMP_NUM_THREADS": "1"}, ""),
    "avx2-threads-4": ({**_AVX2, "OMP_NUM_THREADS": "4"}, ""),
    "onednn-off": ({}, "import torch\ntorch.backends.mkldnn.enabled = False\n"),
}
CHANGES = {
    "learning rate x2": {"train__lr": 2.0e-4},
    "hole loss weight 1.2": {"loss__hole_weight": 1.2},
    "one frame fewer per clip": {"train__num_ref_frames": 0},
    "another seed": {"seed": 2022},
}
GIT = ("git", "-c", "user.name=test", "-c", "user.email=test@example.invalid")


@pytest.fixture(scope="module")
def committed(module_folder, sample_dataset) -> Path:
    """A git + DVC repository whose HEAD holds the reference run's reports/train.json."""
    metrics = run_train(module_folder("reference"), sample_dataset, **SHRUNK)
    repo = module_folder("repo")
    stage = 'stages:\n  train:\n    cmd: "true"\n    metrics:\n    - reports/train.json:\n' \
            "        cache: false\n"  # fmt: skip
    (repo / "dvc.yaml").write_text(stage)
    shutil.copy(ROOT / "verify.yaml", repo / "verify.yaml")
    (repo / "reports").mkdir()
    (repo / "reports" / "train.json").write_text(json.dumps(metrics))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for command in ((*GIT, "init", "-q"), (sys.executable, "-m", "dvc", "init", "-q"),
                    (*GIT, "add", "-A"), (*GIT, "commit", "-qm", "reference")):  # fmt: skip
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
    return repo


def _verdict(repo: Path, metrics: dict, monkeypatch, capsys) -> tuple[int, dict[str, str]]:
    """``e2fgvi verify --workspace`` with ``metrics`` as the workspace's train.json."""
    (repo / "reports" / "train.json").write_text(json.dumps(metrics))
    monkeypatch.chdir(repo)
    code = cli.main(["verify", "--workspace", "--json"])
    out = json.loads(capsys.readouterr().out)
    for m in out["metrics"]:  # shown by pytest -rP: the spread at this scale
        print(m["metric"], m["committed"], m["now"], m["diff"], m["tolerance"], m["verdict"])
    return code, {m["metric"].split(":")[1]: m["verdict"] for m in out["metrics"]}


@pytest.mark.parametrize("machine", list(MACHINES))
def test_the_same_settings_on_an_emulated_machine_are_reproduced(
    machine, committed, sample_dataset, tmp_path, monkeypatch, capsys
):
    env, patch = MACHINES[machine]
    metrics = run_train(tmp_path, sample_dataset, patch, train_env(**env), **SHRUNK)
    code, verdicts = _verdict(committed, metrics, monkeypatch, capsys)
    assert code == 0, {k: v for k, v in verdicts.items() if v != "PASS"}
    assert verdicts["loss_mean.generator"] == "PASS"


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_real_change_is_not_reproduced(
    change, committed, sample_dataset, tmp_path, monkeypatch, capsys
):
    metrics = run_train(tmp_path, sample_dataset, **{**SHRUNK, **CHANGES[change]})
    code, verdicts = _verdict(committed, metrics, monkeypatch, capsys)
    assert code == 1
    failed = {k for k, v in verdicts.items() if v == "FAIL"}
    # Caught by the judged loss means themselves, not by a count or a missing key.
    assert failed and all(k.startswith("loss_mean.") for k in failed), failed
