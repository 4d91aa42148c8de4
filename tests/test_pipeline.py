"""The whole pipeline as a user runs it: `dvc repro` on the sample, then `dvc exp run -S`, then
a queued sweep.

The sample profile is shrunk (3 iterations, 2 local + 1 reference frames, one test video), the
way the lightning-hydra template shrinks its real config, and so is the plan the profile stage
forecasts (the sample's network on 2 devices instead of the official recipe); every stage, the
MLflow run and DVC's own metrics and plots commands are the real ones. A newcomer's view
(both runs by name, with Source, Git commit, System metrics, the dataset and a
registered model version) is checked through the MLflow client, on what the UI shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import copy_repo, git_commit_all

from e2fgvi import tracking
from e2fgvi.tracking.client import client

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
    "Throughput (clips/s)": ("step", {"step_clips_per_s"}),
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
def repro(module_folder) -> tuple[Path, str]:
    """A fresh git copy of the repository with the shrunk profile, after `dvc repro`."""
    copy = copy_repo(module_folder("pipeline"))
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
    for metric in ("loss/generator", "loss/hole", "eval/psnr", "eval/ssim", "step/clips_per_s",
                   "measured/step_time_median_s", "measured/money_usd", "measured/device_hours",
                   "measured/device_hours_per_1k_iter"):  # fmt: skip
        assert metric in run.metrics, metric
    assert not [key for key in run.metrics if key.startswith(("forecast/", "cost/"))]
    assert not [key for key in run.metrics if "gpu_hours" in key]  # a CPU ran
    assert [s for s, _ in tracking.metric_history(ref["uri"], run.run_id, "loss/hole")] == [1, 2, 3]
    evaluated = json.loads((copy / "reports" / "eval" / "metrics.json").read_text())
    assert run.metrics["eval/psnr"] == pytest.approx(evaluated["psnr"])
    cost = json.loads((copy / "reports" / "cost" / "cost.json").read_text())
    assert cost["wall_h"] > 0 and (copy / "reports" / "cost" / "cost.md").exists()
    artifacts = set(tracking.list_artifacts(ref["uri"], run.run_id))
    assert {"checkpoints", "images"} <= artifacts  # sample strips are stepped images
    (profiled,) = _runs(copy, "profile")
    profile = json.loads((copy / "reports" / "profile" / "report.json").read_text())
    assert profile["plan"]["source"] == "plan.yaml" and profile["plan"]["schedule"]["devices"] == 2
    assert profiled.metrics["forecast/device_hours"] == pytest.approx(
        profile["forecast"]["device_hours"]["mean"]
    )
    assert profiled.params["config.devices"] == "2" and profiled.params["device.count"] == "1"
    # Like for like: the same keys for the same things in the training and the profile run.
    shared = ("config.variant", "config.width", "config.precision", "device.kind")
    assert all(run.params[k] == profiled.params[k] for k in shared)
    both = {"measured/step_time_median_s", "measured/device_hours_per_1k_iter",
            "measured/money_usd_per_1k_iter"}  # fmt: skip
    assert both <= set(run.metrics) & set(profiled.metrics)


def _leaves(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) pairs of a metrics map; DVC shows nested keys dotted (loss_mean.hole)."""
    pairs = []
    for key, value in data.items():
        if isinstance(value, dict):
            pairs += _leaves(value, f"{prefix}{key}.")
        else:
            pairs.append((prefix + key, value))
    return pairs


def test_dvc_metrics_are_numbers_for_every_stage(repro):
    """`dvc metrics show --json` lists every stage's metrics file, each a map of numbers."""
    copy, _ = repro
    shown = json.loads(_dvc(copy, "metrics", "show", "--json"))
    files = shown[""]["data"]
    assert set(METRICS_FILES) <= set(files), sorted(files)
    for name in METRICS_FILES:
        data = files[name]["data"]
        assert data, name
        for key, value in _leaves(data):
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
        # DVC names the y column in "field" when a plot has several; with one, only the column.
        fields = {v.get("field") for v in values} if len(ys) > 1 else ys & set(values[0])
        assert fields == ys and all(x in v for v in values), title


@pytest.fixture(scope="module")
def experiment(repro) -> str:
    """The newcomer's experiment after `make repro`: `dvc exp run -n try-lr -S train.lr=0.0002`."""
    copy, _ = repro
    return _dvc(copy, "exp", "run", "-n", "try-lr", "-S", "train.lr=0.0002")


def test_dvc_exp_run_with_a_changed_param_is_a_new_tracked_experiment(repro, experiment):
    copy, _ = repro
    for stage in ("train", "evaluate", "cost"):
        assert f"Running stage '{stage}'" in experiment, stage
    assert "Running stage 'prepare'" not in experiment  # data stages are untouched
    assert "Running stage 'profile'" not in experiment  # the plan did not change
    runs = _runs(copy, "train")
    assert sorted(r.params["train.lr"] for r in runs) == ["0.0001", "0.0002"]
    newest = runs[0]
    assert newest.params["train.lr"] == "0.0002" and "eval/psnr" in newest.metrics
    shown = _dvc(copy, "exp", "show", "--csv")
    assert "try-lr" in shown


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


def _git(copy: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=copy, capture_output=True, text=True).stdout.strip()


def _prepared_hash(copy: Path) -> str:
    lock = yaml.safe_load((copy / "dvc.lock").read_text())
    (frames,) = [o for o in lock["stages"]["prepare"]["outs"] if o["path"].endswith("JPEGImages")]
    return frames["md5"]


def test_a_newcomer_sees_both_runs_by_name_with_source_commit_system_data_and_model(
    repro, experiment
):
    copy, _ = repro
    uri = tracking.tracking_uri(copy / "mlruns")
    mlflow = client(uri)
    commit = _git(copy, "rev-parse", "HEAD")
    by_name = {r.run_name: r for r in _runs(copy, "train") if not r.run_name.startswith("sweep-")}
    label = "e2fgvi-hq-108x60-1cpu-fp32"  # what ran: `dvc repro`, then `dvc exp run -n`
    assert set(by_name) == {f"{label}-{commit[:7]}", "try-lr"}
    versions = {v.run_id: v for v in mlflow.search_model_versions("name='e2fgvi-generator'")}
    for name, record in by_name.items():
        run = mlflow.get_run(record.run_id)
        tags = run.data.tags
        assert tags["mlflow.runName"] == name
        assert tags["mlflow.source.name"] == "src/e2fgvi/stages/train.py"  # the UI's Source
        assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.user"]
        assert "system/cpu_utilization_percentage" in run.data.metrics  # System metrics tab
        (data,) = run.inputs.dataset_inputs  # the UI's Datasets, with the DVC hash as digest
        assert data.dataset.digest == _prepared_hash(copy)
        version = versions[record.run_id]  # the registered model version from evaluate
        assert version.tags["eval/psnr"] == f"{run.data.metrics['eval/psnr']:.4g}"
        assert "It cost" in version.description and "cost/cost.md" in version.description
        assert "trained for 3 iterations" in tags["mlflow.note.content"]
        images = tracking.list_artifacts(uri, record.run_id, "images")
        for step in (0, 3):
            assert any(f.startswith(f"images/samples~training_clip+step+{step}+") for f in images)
    assert by_name["try-lr"].tags["dvc.exp.name"] == "try-lr"
    assert by_name["try-lr"].tags["dvc.exp.baseline_rev"] == commit
    assert sorted(int(v.version) for v in versions.values()) == [1, 2]


def _queue_settled(copy: Path, limit_s: float = 900) -> str:
    """`dvc queue status` once nothing is queued or running any more."""
    begin = time.monotonic()
    while time.monotonic() - begin < limit_s:
        status = _dvc(copy, "queue", "status")
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(5)
    pytest.fail(f"the DVC queue did not finish in {limit_s} s:\n{status}")


def test_a_queued_sweep_gives_each_experiment_its_own_mlflow_run(repro, experiment):
    copy, _ = repro
    for lr in ("0.0003", "0.0004"):  # only up to `train`: the sweep is about training runs
        _dvc(copy, "exp", "run", "--queue", "-n", f"sweep-{lr}", "-S", f"train.lr={lr}", "train")
    _dvc(copy, "queue", "start", "-j", "1")
    status = _queue_settled(copy)
    assert status.count("Success") >= 2 and "Failed" not in status, status
    # Each experiment ran in its own copy under .dvc/tmp/exps, and logged into this store.
    swept = {r.run_name: r for r in _runs(copy, "train") if r.run_name.startswith("sweep-")}
    assert set(swept) == {"sweep-0.0003", "sweep-0.0004"}
    for name, run in swept.items():
        assert run.params["train.lr"] == name.removeprefix("sweep-")
        assert run.status == "FINISHED" and "loss/generator" in run.metrics
        assert run.tags["dvc.exp.name"] == name
    shown = _dvc(copy, "exp", "show", "--csv")
    assert "sweep-0.0003" in shown and "sweep-0.0004" in shown
