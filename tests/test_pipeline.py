"""The whole pipeline as a user runs it: `dvc repro` on the sample, then `dvc exp run -S`.

The sample profile is shrunk (3 iterations, 2 local + 1 reference frames, one test video), the
way the lightning-hydra template shrinks its real config, and so is the plan the profile stage
forecasts (the sample's network on 2 devices instead of the official recipe); every stage, the
MLflow run and DVC's own metrics and plots commands are the real ones.
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
PLAN = {"train": {"batch_size": 2, "nproc_per_node": 2, "iterations": 1000}}
WINDOW = {"profile_warmup": 1, "profile_steps": 2}
METRICS_FILES = ("reports/data.json", "reports/train.json", "reports/eval/metrics.json",
                 "reports/cost/cost.json", "reports/profile/profile.json")  # fmt: skip
# Each data plot of dvc.yaml: its x and its y columns.
DATA_PLOTS = {
    "Training losses": ("step", {"loss/generator", "loss/hole", "loss/valid", "loss/flow",
                                 "loss/discriminator"}),
    "Step time (s)": ("step", {"step_s", "compute_s", "data_s"}),
    "Throughput (clips/s)": ("step", {"clips_per_s"}),
    "GPU power (W)": ("t_s", {"power_w"}),
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
    params["cost"]["forecast"].update(WINDOW)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    plan = yaml.safe_load((copy / "params.yaml").read_text())
    plan["train"].update(PLAN["train"])
    (copy / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    dvc_yaml = (copy / "dvc.yaml").read_text()
    assert "plan: params.official.yaml" in dvc_yaml
    (copy / "dvc.yaml").write_text(
        dvc_yaml.replace("plan: params.official.yaml", "plan: plan.yaml")
    )
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
                   "cost/step_time_median_s", "cost/forecast_device_hours", "cost/forecast_money",
                   "cost/forecast_wall_h", "cost/device_hours"):  # fmt: skip
        assert metric in run.metrics, metric
    assert not [key for key in run.metrics if "gpu_hours" in key]  # a CPU ran
    assert [s for s, _ in tracking.metric_history(ref["uri"], run.run_id, "loss/hole")] == [1, 2, 3]
    evaluated = json.loads((copy / "reports" / "eval" / "metrics.json").read_text())
    assert run.metrics["eval/psnr"] == pytest.approx(evaluated["psnr"])
    cost = json.loads((copy / "reports" / "cost" / "cost.json").read_text())
    assert cost["forecast_wall_h"] > 0 and (copy / "reports" / "cost" / "cost.md").exists()
    artifacts = set(tracking.list_artifacts(ref["uri"], run.run_id))
    assert {"checkpoints", "samples"} <= artifacts
    (profiled,) = _runs(copy, "profile")
    profile = json.loads((copy / "reports" / "profile" / "report.json").read_text())
    assert profile["plan"]["source"] == "plan.yaml" and profile["plan"]["schedule"]["devices"] == 2
    assert profiled.metrics["cost/forecast_device_hours"] == pytest.approx(
        profile["forecast"]["device_hours"]["mean"]
    )
    assert profiled.params["plan.devices"] == "2" and profiled.params["measured.devices"] == "1"


def test_dvc_metrics_are_flat_numbers_for_every_stage(repro):
    """`dvc metrics show --json` lists every stage's metrics file, each a flat map of numbers."""
    copy, _ = repro
    shown = json.loads(_dvc(copy, "metrics", "show", "--json"))
    files = shown[""]["data"]
    assert set(METRICS_FILES) <= set(files), sorted(files)
    for name in METRICS_FILES:
        data = files[name]["data"]
        assert data, name
        for key, value in data.items():
            assert isinstance(value, int | float) and not isinstance(value, bool), (name, key)
    columns = set(_dvc(copy, "exp", "show", "--csv").splitlines()[0].split(","))
    prose = {"vfid_note", "variant", "size", "output_resolution", "notes", "assumptions",
             "forecast_note", "band", "device_names", "hours_unit"}  # fmt: skip
    assert not prose & columns, prose & columns


def test_every_plot_has_an_explicit_x_and_y(repro):
    """`dvc plots show --json`: the data plots with their x and y, and one image (the strip)."""
    copy, _ = repro
    plots = json.loads(_dvc(copy, "plots", "show", "--json"))["data"]
    assert set(plots) == {*DATA_PLOTS, "reports/eval/strip.png"}, sorted(plots)
    assert plots["reports/eval/strip.png"][0]["type"] == "image"
    assert plots["GPU power (W)"] == []  # a CPU run: the power CSV has a header and no rows
    for title, (x, ys) in DATA_PLOTS.items():
        if title == "GPU power (W)":
            continue
        (plot,) = plots[title]
        content = plot["content"]
        assert plot["type"] == "vega" and content["encoding"]["x"]["field"] == x, title
        values = content["data"]["values"]
        assert {v["field"] for v in values} == ys and all(x in v for v in values), title


def test_dvc_exp_run_with_a_changed_param_is_a_new_tracked_experiment(repro):
    copy, _ = repro
    output = _dvc(copy, "exp", "run", "-S", "train.lr=0.0002", "-n", "lr2e-4")
    for stage in ("train", "evaluate", "cost"):
        assert f"Running stage '{stage}'" in output, stage
    assert "Running stage 'prepare'" not in output  # data stages are untouched
    assert "Running stage 'profile'" not in output  # the plan did not change
    runs = _runs(copy, "train")
    assert sorted(r.params["train.lr"] for r in runs) == ["0.0001", "0.0002"]
    newest = runs[0]
    assert newest.params["train.lr"] == "0.0002" and "eval/psnr" in newest.metrics
    shown = _dvc(copy, "exp", "show", "--csv")
    assert "lr2e-4" in shown
