"""`e2fgvi verify` on the real pipeline: commit a shrunk sample run, rerun it, judge it.

A fresh git copy of the repository runs the shrunk sample profile (as ``test_pipeline.py`` does)
and commits its results; ``e2fgvi verify`` then reruns every stage as a DVC experiment with the
committed ``verify.yaml`` and must find the rerun reproduced, leaving the workspace's results
alone. A committed PSNR that the code does not produce must then fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import copy_repo, git_commit_all

pytestmark = pytest.mark.slow

SHRINK = {
    "train": {"iterations": 2, "num_local_frames": 2, "num_ref_frames": 1, "checkpoint_every": 2,
              "image_every": 2},
    "eval": {"max_videos": 1},
    "cost": {"warmup_steps": 1},
    "tracking": {"experiment": "verify-test"},
}  # fmt: skip
GIT = ("git", "-c", "user.name=test", "-c", "user.email=test@example.invalid")


def _run(copy: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(copy / "src"), "DVC_NO_ANALYTICS": "1"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True)
    if check:
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


@pytest.fixture(scope="module")
def committed(module_folder) -> Path:
    """A copy whose shrunk pipeline results (dvc.lock, reports/) are committed at HEAD."""
    copy = copy_repo(module_folder("verify"))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    for section, values in SHRINK.items():
        params[section].update(values)
    params["cost"]["forecast"].update({"profile_warmup": 1, "profile_steps": 2})
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The profile stage forecasts the shrunk params too: the official plan takes minutes a step.
    (copy / "plan.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_yaml = (copy / "dvc.yaml").read_text()
    assert "plan: params.official.yaml" in dvc_yaml
    dvc_yaml = dvc_yaml.replace("plan: params.official.yaml", "plan: plan.yaml")
    (copy / "dvc.yaml").write_text(dvc_yaml)
    (copy / "dvc.lock").unlink(missing_ok=True)
    git_commit_all(copy)
    _run(copy, sys.executable, "-m", "dvc", "repro")
    _run(copy, *GIT, "add", "-A")
    _run(copy, *GIT, "commit", "-qm", "results")
    return copy


def test_a_rerun_on_the_same_machine_is_reproduced(committed):
    before = (committed / "reports" / "eval" / "metrics.json").read_bytes()
    done = _run(committed, sys.executable, "-m", "e2fgvi.cli", "verify", "--name", "rerun",
                check=False)  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-4000:]
    assert "HEAD (committed) vs rerun (now)" in out and out.rstrip().endswith("REPRODUCED")
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("reports/")}
    for metric in ("reports/eval/metrics.json:psnr", "reports/train.json:loss_mean.generator",
                   "reports/data.json:train_frames", "reports/train.json:iterations"):  # fmt: skip
        assert rows[metric].rstrip().endswith("PASS"), rows[metric]
    assert (committed / "reports" / "eval" / "metrics.json").read_bytes() == before


def test_a_committed_psnr_the_code_does_not_produce_fails(committed):
    path = committed / "reports" / "eval" / "metrics.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({**metrics, "psnr": metrics["psnr"] + 0.5}))
    _run(committed, *GIT, "commit", "-qam", "a PSNR nobody measured")
    done = _run(committed, sys.executable, "-m", "e2fgvi.cli", "verify", "--exp", "rerun",
                "--json", check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    verdicts = {m["metric"]: m for m in json.loads(done.stdout)["metrics"]}
    psnr = verdicts["reports/eval/metrics.json:psnr"]
    assert psnr["verdict"] == "FAIL" and psnr["diff"] == pytest.approx(0.5)
    assert verdicts["reports/eval/metrics.json:ssim"]["verdict"] == "PASS"
