"""The cost stage end to end on a CPU record: report files, MLflow metrics, compare table."""

from __future__ import annotations

import argparse
import csv
import io
import json
import time

import pytest
import torch
import yaml
from helpers import write_params

from e2fgvi import cli, tracking
from e2fgvi.atomic import write_json
from e2fgvi.config import CostParams
from e2fgvi.cost import compare
from e2fgvi.errors import UserError
from e2fgvi.measure.meter import CostMeter
from e2fgvi.measure.record import CostRecord, write_record
from e2fgvi.stages import cost as cost_stage

EXPERIMENT = "cost-test"


def _cpu_record() -> CostRecord:
    meter = CostMeter(CostParams(warmup_steps=1), torch.device("cpu"), clips_per_step=1)
    meter.start()
    for step in range(5):
        with meter.data_wait():
            time.sleep(0.002)
        with meter.compute():
            time.sleep(0.01)
        meter.end_step(step)
    meter.set_flops_per_step(1e9)
    return meter.gather(meter.stop())


def _cost_stage(argv: list[str]) -> None:
    """The cost stage's ``run`` on ``argv``, parsed by its own ``add_arguments``."""
    parser = argparse.ArgumentParser()
    cost_stage.add_arguments(parser)
    cost_stage.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def staged(tmp_path_factory, repo_root):
    """A train-like run in a SQLite store, then the cost stage on it."""
    root = tmp_path_factory.mktemp("cost")
    mlruns, run_dir, out = root / "mlruns", root / "run", root / "reports" / "cost"
    uri = tracking.tracking_uri(mlruns)
    logger = tracking.RunLogger(
        uri=uri, experiment=EXPERIMENT, run_name="train-1", artifact_root=mlruns
    )
    logger.log_metrics({"eval/psnr": 31.5})
    assert logger.close()
    write_record(run_dir / "cost_raw.json", _cpu_record())
    write_json(run_dir / "mlflow_run.json", {"run_id": logger.run_id, "uri": uri, "spool": None})
    write_json(
        run_dir / "params_used.json", yaml.safe_load((repo_root / "params.yaml").read_text())
    )
    argv = [
        "--record", str(run_dir / "cost_raw.json"), "--run", str(run_dir / "mlflow_run.json"),
        "--params-used", str(run_dir / "params_used.json"), "--mlruns", str(mlruns),
        "--out", str(out), "--params", str(repo_root / "params.yaml"),
    ]  # fmt: skip
    _cost_stage(argv)
    return {
        "root": root,
        "mlruns": mlruns,
        "out": out,
        "run_id": logger.run_id,
        "uri": uri,
        "argv": argv,
    }


def test_report_files_are_written(staged):
    out = staged["out"]
    for name in ("step_time.png", "throughput.png", "power.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "cost.json").read_text())
    measured = report["measured"]
    assert measured["steps_measured"] == 4 and measured["step_time_median_s"] >= 0.012
    # No GPU here: GPU figures are explicitly null, CPU figures are present.
    for key in ("gpu_hours", "energy_gpu_kwh", "mfu", "clips_per_s_per_gpu", "peak_allocated_gb"):
        assert measured[key] is None, key
    assert measured["clips_per_s"] > 0 and measured["cpu_hours"] > 0
    assert report["conditions"]["amp"] == "fp32" and report["conditions"]["warmup_excluded"] == 1
    fc = report["forecast"]
    assert fc["iterations"] == 500_000 and fc["gpus"] == 8
    text = (out / "cost.md").read_text()
    assert "## Forecast for the full schedule" in text and "| gpu_hours | null |" in text
    assert "no CUDA device" in text


def test_cost_metrics_and_artifacts_in_the_run(staged):
    (run,) = [r for r in tracking.search_runs(staged["uri"], [EXPERIMENT])]
    assert run.run_id == staged["run_id"]
    metrics = run.metrics
    assert metrics["cost/step_time_median_s"] >= 0.012
    assert metrics["cost/forecast_wall_h"] > 0
    assert metrics["cost/forecast_gpu_hours_low"] <= metrics["cost/forecast_gpu_hours_high"]
    assert "cost/gpu_hours" not in metrics and "cost/mfu" not in metrics  # null: not logged
    assert run.tags["cost.device"] == "cpu" and run.tags["cost.precision"] == "fp32"
    artifacts = tracking.list_artifacts(staged["uri"], run.run_id, "cost")
    assert {"cost/cost.json", "cost/cost.md", "cost/power.png", "cost/cost_raw.json"} <= set(
        artifacts
    )


def _compare(mlruns, fmt: str, capsys) -> str:
    args = argparse.Namespace(action="compare", mlruns=mlruns, experiment=[EXPERIMENT], format=fmt)
    assert compare.run(args) == 0
    return capsys.readouterr().out


def test_compare_table_formats(staged, capsys):
    table = _compare(staged["mlruns"], "table", capsys)
    header, row = table.splitlines()
    assert header.split()[:2] == ["experiment", "run"] and "clips/s per GPU" in header
    assert row.startswith(EXPERIMENT) and "train-1" in row and "31.5" in row and "USD" in row
    rows = list(csv.DictReader(io.StringIO(_compare(staged["mlruns"], "csv", capsys))))
    assert rows[0]["PSNR"] == "31.5" and rows[0]["GPUs"] == "0" and rows[0]["device"] == "cpu"
    data = json.loads(_compare(staged["mlruns"], "json", capsys))
    assert data[0]["run_id"] == staged["run_id"] and data[0]["forecast_gpu_hours"] > 0
    markdown = _compare(staged["mlruns"], "md", capsys)
    assert markdown.splitlines()[1].startswith("| --- |")


def test_compare_via_cli_and_missing_store(staged, tmp_path, capsys):
    code = cli.main(["cost", "compare", "--mlruns", str(staged["mlruns"]), "--format", "csv"])
    assert code == 0 and EXPERIMENT in capsys.readouterr().out
    args = argparse.Namespace(action="compare", mlruns=tmp_path, experiment=None, format="table")
    with pytest.raises(UserError, match="no MLflow store"):
        compare.run(args)


def test_compare_against_a_server_that_is_down_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
    assert cli.main(["cost", "compare"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "cannot read the MLflow runs" in errors[0], errors


def test_stage_errors_name_the_file(staged, tmp_path):
    argv = list(staged["argv"])
    argv[1] = str(tmp_path / "missing.json")
    with pytest.raises(UserError, match=r"missing\.json: not found"):
        _cost_stage(argv)
    bad = tmp_path / "params_used.json"
    bad.write_text(json.dumps({"train": {"amp": "fp8"}}))
    argv = list(staged["argv"])
    argv[5] = str(bad)
    with pytest.raises(UserError, match=r"params_used\.json: train\.amp"):
        _cost_stage(argv)


def test_profile_command_logs_forecast_metrics(staged, tmp_path, capsys):
    """`e2fgvi profile` times real E2FGVI-HQ training steps (2 local + 1 reference frame)."""
    params = write_params(
        tmp_path / "cfg",
        train__num_local_frames=2,
        train__num_ref_frames=1,
        cost__forecast__profile_warmup=1,
        cost__forecast__profile_steps=2,
    )
    out = tmp_path / "profile.json"
    argv = ["profile", "--params", str(params), "--mlruns",
            str(staged["mlruns"]), "--out", str(out), "--gpus", "4"]  # fmt: skip
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["forecast"]["gpus"] == 4 and report["forecast"]["clips_per_gpu"] == 2
    assert report["memory"]["max_clips_per_gpu"] is None
    (run,) = tracking.search_runs(staged["uri"], ["e2fgvi-sample"])
    assert run.tags["cost.kind"] == "profile" and run.run_name == "profile-cpu"
    assert run.metrics["cost/forecast_gpu_hours"] == pytest.approx(
        report["forecast"]["gpu_hours"]["mean"]
    )
    assert "cost/forecast_max_clips_per_gpu" not in run.metrics  # null on CPU: not logged
    assert "forecast for 500000 iterations on 4 GPU(s)" in capsys.readouterr().err
