"""The whole pipeline as a user runs it: `dvc repro` on the sample, then `dvc exp run -S`.

The sample profile is shrunk (3 iterations, 2 local + 1 reference frames, one test video), the
way the lightning-hydra template shrinks its real config; every stage and the MLflow run are
the real ones.
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

from e2fgvi import tracking

pytestmark = pytest.mark.slow

SHRINK = {
    "train": {"iterations": 3, "num_local_frames": 2, "num_ref_frames": 1, "checkpoint_every": 3,
              "image_every": 3},
    "eval": {"max_videos": 1},
    "cost": {"warmup_steps": 1},
    "tracking": {"experiment": "pipeline-test"},
}  # fmt: skip
STAGES = ("download", "pretrained", "prepare", "masks", "train", "evaluate", "cost", "profile")


def _runs(copy: Path, kind: str) -> list[tracking.RunRecord]:
    """Training runs (kind "train") or profiling runs ("profile") of the test experiment."""
    runs = tracking.search_runs(tracking.tracking_uri(copy / "mlruns"), ["pipeline-test"])
    return [r for r in runs if (r.tags.get("cost.kind") == "profile") == (kind == "profile")]


def _run(copy: Path, *args: str) -> str:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(copy / "src"), "DVC_NO_ANALYTICS": "1"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> tuple[Path, str]:
    """A fresh git copy of the repository with the shrunk profile, after `dvc repro`."""
    copy = copy_repo(tmp_path_factory.mktemp("pipeline"))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    for section, values in SHRINK.items():
        params[section].update(values)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (copy / "dvc.lock").unlink(missing_ok=True)
    git_commit_all(copy)
    return copy, _run(copy, str(Path(sys.executable).parent / "dvc"), "repro")


def _dvc(copy: Path, *args: str) -> str:
    return _run(copy, str(Path(sys.executable).parent / "dvc"), *args)


def test_every_stage_runs_then_nothing_reruns(repro):
    copy, output = repro
    for stage in STAGES:
        assert f"Running stage '{stage}'" in output, stage
    again = _dvc(copy, "repro")
    assert "Running stage" not in again and "up to date" in again


def test_one_mlflow_run_holds_training_evaluation_and_cost(repro):
    copy, _ = repro
    ref = json.loads((copy / "data" / "run" / "mlflow_run.json").read_text())
    (run,) = _runs(copy, "train")
    assert run.run_id == ref["run_id"]
    assert run.params["train.iterations"] == "3"
    for metric in ("loss/generator", "loss/hole", "eval/psnr", "eval/ssim", "cost/clips_per_s",
                   "cost/step_time_median_s", "cost/forecast_gpu_hours", "cost/forecast_money",
                   "cost/forecast_wall_h"):  # fmt: skip
        assert metric in run.metrics, metric
    assert [s for s, _ in tracking.metric_history(ref["uri"], run.run_id, "loss/hole")] == [1, 2, 3]
    evaluated = json.loads((copy / "reports" / "eval" / "metrics.json").read_text())
    assert run.metrics["eval/psnr"] == pytest.approx(evaluated["psnr"])
    cost = json.loads((copy / "reports" / "cost" / "cost.json").read_text())
    assert (
        json.dumps(cost).count("forecast") > 0 and (copy / "reports" / "cost" / "cost.md").exists()
    )
    artifacts = set(tracking.list_artifacts(ref["uri"], run.run_id))
    assert {"checkpoints", "samples"} <= artifacts
    (profiled,) = _runs(copy, "profile")
    profile = json.loads((copy / "reports" / "profile.json").read_text())
    assert profiled.metrics["cost/forecast_gpu_hours"] == pytest.approx(
        profile["forecast"]["gpu_hours"]["mean"]
    )


def test_dvc_exp_run_with_a_changed_param_is_a_new_tracked_experiment(repro):
    copy, _ = repro
    output = _dvc(copy, "exp", "run", "-S", "train.lr=0.0002", "-n", "lr2e-4")
    for stage in ("train", "evaluate", "cost", "profile"):
        assert f"Running stage '{stage}'" in output, stage
    assert "Running stage 'prepare'" not in output  # data stages are untouched
    runs = _runs(copy, "train")
    assert sorted(r.params["train.lr"] for r in runs) == ["0.0001", "0.0002"]
    newest = runs[0]
    assert newest.params["train.lr"] == "0.0002" and "eval/psnr" in newest.metrics
    shown = _dvc(copy, "exp", "show", "--csv")
    assert "lr2e-4" in shown


def test_a_stage_failing_on_a_partial_params_yaml_loses_nothing(repro):
    """DVC deletes a stage's outputs before running it, and the run then fails on the broken
    params.yaml; the documented recovery (fix params.yaml, `dvc checkout`) gives every output of
    the last good training back, byte for byte, and nothing needs rerunning."""
    copy, _ = repro
    kept = [
        copy / "data" / "run" / name
        for name in ("generator.pth", "mlflow_run.json", "cost_raw.json", "params_used.json")
    ]
    kept += [copy / "reports" / "train.json", copy / "reports" / "train_loss.csv"]  # fmt: skip
    before = {path: path.read_bytes() for path in kept}
    good = (copy / "params.yaml").read_text()
    partial = yaml.safe_load(good)
    del partial["loss"]  # a section lost in an edit
    (copy / "params.yaml").write_text(yaml.safe_dump(partial, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(copy / "src"), "DVC_NO_ANALYTICS": "1"}  # fmt: skip
    failed = subprocess.run([str(bin_dir / "dvc"), "repro", "train"], cwd=copy, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert failed.returncode != 0 and "loss" in failed.stdout + failed.stderr
    assert not (copy / "data" / "run" / "generator.pth").exists()  # DVC did delete the outputs
    (copy / "params.yaml").write_text(good)
    _dvc(copy, "checkout")
    assert {path: path.read_bytes() for path in kept} == before
    status = _dvc(copy, "status")
    assert "up to date" in status, status
