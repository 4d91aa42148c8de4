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
from e2fgvi.tracking.client import client

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
def staged(module_folder, repo_root):
    """A train-like run in a SQLite store, then the cost stage on it."""
    root = module_folder("cost")
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
    steps = list(csv.DictReader((out / "step_time.csv").open()))
    assert [int(float(r["step"])) for r in steps] == [1, 2, 3, 4]  # the measured steps
    assert all(float(r["step_s"]) >= float(r["compute_s"]) >= 0.01 for r in steps)
    rates = list(csv.DictReader((out / "throughput.csv").open()))
    assert len(rates) == 4 and all(float(r["step_clips_per_s"]) > 0 for r in rates)
    assert (out / "power.csv").read_text() == "t_s,power_w\n"  # no GPU sampled: no rows
    report = json.loads((out / "report.json").read_text())
    measured = report["measured"]
    assert measured["steps_measured"] == 4 and measured["step_time_median_s"] >= 0.012
    # No GPU here: GPU figures are explicitly null, CPU figures are present, hours are CPU's.
    for key in ("energy_gpu_kwh", "mfu", "peak_allocated_gb"):
        assert measured[key] is None, key
    assert measured["device_kind"] == "cpu" and measured["hours_unit"] == "CPU device-hours"
    assert measured["devices"] == 1 and measured["device_hours"] > 0
    assert measured["clips_per_s"] > 0 and measured["cpu_hours"] > 0
    assert report["conditions"]["amp"] == "fp32" and report["conditions"]["warmup_excluded"] == 1
    fc = report["forecast"]  # stopped at 5 of params.yaml's 40 iterations: the rest forecast
    assert fc["iterations"] == 40 and fc["devices"] == 1 and not fc["derived"]
    text = (out / "cost.md").read_text()
    assert text.startswith("# What this training run cost\n\nThis run trained 5 iterations")
    assert "## Forecast of the rest of the schedule" in text and "(CPU device-hours) |" in text
    assert "no CUDA device" in text
    # DVC metrics: flat numbers only (prose and nested groups are in report.json / cost.md).
    figures = json.loads((out / "cost.json").read_text())
    assert all(v is None or isinstance(v, int | float) for v in figures.values())
    assert figures["forecast_wall_h"] == pytest.approx(fc["wall_h"]["mean"])
    for text in [*(p.read_text() for p in out.iterdir()), json.dumps(figures)]:
        assert "gpu_hours" not in text and "GPU-h" not in text


def test_cost_metrics_and_artifacts_in_the_run(staged):
    (run,) = [r for r in tracking.search_runs(staged["uri"], [EXPERIMENT])]
    assert run.run_id == staged["run_id"]
    metrics = run.metrics
    assert metrics["measured/step_time_median_s"] >= 0.012
    assert metrics["measured/money_usd"] > 0 and metrics["measured/device_hours"] > 0
    assert metrics["measured/money_usd_per_1k_iter"] == pytest.approx(
        metrics["measured/device_hours_per_1k_iter"]
        * float(run.params["cost.price_per_device_hour"])
    )
    assert not [key for key in metrics if key.startswith(("forecast/", "cost/"))]  # not of itself
    assert "measured/mfu" not in metrics  # null: not logged
    assert not [key for key in metrics if "gpu_hours" in key]  # a CPU ran: no GPU-hours
    assert run.params["device.kind"] == "cpu" and run.params["cost.currency"] == "USD"
    note = client(staged["uri"]).get_run(run.run_id).data.tags["mlflow.note.content"]
    assert "It cost" in note and "USD" in note
    assert run.tags["cost.device"] == "cpu" and run.tags["cost.precision"] == "fp32"
    assert run.tags["cost.device_kind"] == "cpu"
    artifacts = tracking.list_artifacts(staged["uri"], run.run_id, "cost")
    expected = {"cost/cost.json", "cost/report.json", "cost/cost.md", "cost/power.csv",
                "cost/step_time.csv", "cost/cost_raw.json"}  # fmt: skip
    assert expected <= set(artifacts)


def _compare(mlruns, fmt: str, capsys, experiment=(EXPERIMENT,), **options) -> str:
    args = argparse.Namespace(action="compare", mlruns=mlruns, experiment=list(experiment),
                              format=fmt, quality=False, page_size=1000)  # fmt: skip
    for key, value in options.items():
        setattr(args, key, value)
    assert compare.run(args) == 0
    return capsys.readouterr().out


def test_compare_table_formats(staged, capsys):
    table = _compare(staged["mlruns"], "table", capsys)
    header, row = table.splitlines()
    assert header.split()[:2] == ["experiment", "run"] and "clips/s per device" in header
    assert row.startswith(EXPERIMENT) and "train-1" in row and "31.5" in row and "USD" in row
    assert "GPU" not in table  # a CPU run: no GPU-hours, no GPU column
    rows = list(csv.DictReader(io.StringIO(_compare(staged["mlruns"], "csv", capsys))))
    assert rows[0]["PSNR"] == "31.5" and rows[0]["devices"] == "1" and rows[0]["device"] == "cpu"
    assert rows[0]["device kind"] == "cpu"
    data = json.loads(_compare(staged["mlruns"], "json", capsys))
    assert data[0]["run_id"] == staged["run_id"] and data[0]["device_hours"] > 0
    assert data[0]["forecast_device_hours"] is None  # a training run forecasts not itself
    markdown = _compare(staged["mlruns"], "md", capsys)
    assert markdown.splitlines()[1].startswith("| --- |")


def test_compare_via_cli_and_missing_store(staged, tmp_path, capsys):
    code = cli.main(["cost", "compare", "--mlruns", str(staged["mlruns"]), "--format", "csv"])
    assert code == 0 and EXPERIMENT in capsys.readouterr().out
    args = argparse.Namespace(action="compare", mlruns=tmp_path, experiment=None, format="table",
                              quality=False, page_size=1000)  # fmt: skip
    with pytest.raises(UserError, match="no MLflow store"):
        compare.run(args)


def test_compare_against_a_server_that_is_down_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
    assert cli.main(["cost", "compare"]) == 1
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


def test_profile_command_profiles_the_plan_not_params_yaml(staged, tmp_path, capsys):
    """`e2fgvi profile --plan` times real E2FGVI-HQ training steps of the plan's configuration."""
    params = write_params(  # its train section is not the plan: 5+3 frames at 216x120
        tmp_path / "cfg", cost__forecast__profile_warmup=1, cost__forecast__profile_steps=2,
        train__width=216, train__height=120,
    )  # fmt: skip
    plan = write_params(
        tmp_path / "plan", train__num_local_frames=2, train__num_ref_frames=1,
        train__batch_size=4, train__nproc_per_node=2, train__iterations=1000,
    )  # fmt: skip
    out = tmp_path / "profile"
    argv = ["profile", "--params", str(params), "--plan", str(plan), "--mlruns",
            str(staged["mlruns"]), "--out", str(out), "--devices", "4"]  # fmt: skip
    assert cli.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    step = report["measurements"][0]["step"]
    assert (step["width"], step["height"], step["local_frames"]) == (108, 60, 2)  # the plan's
    assert report["forecast"]["devices"] == 4 and report["forecast"]["clips_per_device"] == 1
    assert report["measurements"][0]["memory"]["max_clips_per_device"] is None
    assert [d["field"] for d in report["differences"]] == ["devices"]
    switches = {r["name"]: r for r in report["switches"]["results"]}  # cost.switches, timed here
    assert switches["fp32"]["measured"] and switches["sampled"]["speedup"] > 0
    assert "## Speed switches on this device" in (out / "profile.md").read_text()
    figures = json.loads((out / "profile.json").read_text())
    (run,) = tracking.search_runs(staged["uri"], ["e2fgvi-sample"])
    assert run.tags["cost.kind"] == "profile"
    assert run.run_name.startswith("profile-e2fgvi-hq-108x60-4cpu-fp32")
    assert run.metrics["forecast/device_hours"] == pytest.approx(figures["forecast_device_hours"])
    assert run.params["config.width"] == "108" and run.params["config.devices"] == "4"
    assert run.params["device.count"] == "1" and run.params["device.kind"] == "cpu"
    assert "measured/peak_allocated_gb" not in run.metrics  # null on CPU: not logged
    err = capsys.readouterr().err
    assert "1000 iterations on 4 cpu device(s)" in err and "CPU device-hours" in err
