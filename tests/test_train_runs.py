"""The train stage as a user runs it: checkpoints, exact resume after SIGKILL, DDP, MLflow.

Every run here is the real E2FGVI-HQ at the sample size (60x108) with 2 local + 1 reference
frames, so a step takes seconds on 2 CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
from pathlib import Path

import mlflow_server
import numpy as np
import pytest
import torch
from helpers import finish_train, history_rows, start_train, train_env, wait_rows

from e2fgvi import tracking
from e2fgvi.config import load_params
from e2fgvi.cost.forecast import Schedule, StepSample, forecast
from e2fgvi.cost.summary import summarise
from e2fgvi.measure.record import read_record
from e2fgvi.model import InpaintGenerator, load_generator_state
from e2fgvi.tracking.spool import read_records

pytestmark = pytest.mark.slow

LOSSES = ("loss/hole", "loss/valid", "loss/flow", "loss/adversarial", "loss/discriminator")

# The shared train-stage process functions, under this module's earlier names.
_env, _train, _finish = train_env, start_train, finish_train
_history, _wait_rows = history_rows, wait_rows


def _losses(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    return [(row["step"], *(row[key] for key in LOSSES)) for row in rows]


@pytest.fixture(scope="module")
def full_run(module_folder, sample_dataset) -> Path:
    """An uninterrupted 8-iteration run (the reference for resume, DDP and the forecast)."""
    folder = module_folder("full")
    _finish(_train(folder, sample_dataset, train__iterations=8), folder)
    return folder


def test_stage_outputs_weights_metrics_and_the_mlflow_run(full_run):
    state = load_generator_state(full_run / "run" / "generator.pth", "e2fgvi_hq")
    InpaintGenerator("e2fgvi_hq").load_state_dict(state, strict=True)
    checkpoints = sorted(p.name for p in (full_run / "run" / "checkpoints").glob("*/ckpt_*.pth"))
    assert checkpoints == ["ckpt_0000006.pth", "ckpt_0000008.pth"]  # every 2 and the end, keep 2
    figures = json.loads((full_run / "train.json").read_text())
    assert figures["iterations"] == 8 and figures["steps_measured"] == 7
    assert figures["clips_per_s"] > 0 and figures["skipped_updates"] == 0
    steps = [r["step"] for r in csv.DictReader((full_run / "train_loss.csv").open())]
    assert steps == list("12345678")
    record = json.loads((full_run / "run" / "cost_raw.json").read_text())
    assert record["totals"]["flops_per_step"] > 1e9 and record["totals"]["clips_per_step"] == 1
    assert record["previous_sessions"] == [] and record["totals"]["steps_total"] == 8
    ref = json.loads((full_run / "run" / "mlflow_run.json").read_text())
    assert ref["run_id"] and ref["spool"] is None
    run = tracking.search_runs(ref["uri"], ["test-train"])[0]
    assert run.run_id == ref["run_id"] and run.status == "FINISHED"
    assert run.params["train.iterations"] == "8" and run.params["model.variant"] == "e2fgvi_hq"
    for tag in ("git.commit", "torch", "device.name", "speed.amp", "speed.tf32", "resume_key"):
        assert tag in run.tags, tag
    history = tracking.metric_history(ref["uri"], run.run_id, "loss/hole")
    assert [step for step, _ in history] == [1, 2, 3, 4, 5, 6, 7, 8]
    rows = _history(full_run)
    assert [value for _, value in history] == pytest.approx([float(r["loss/hole"]) for r in rows])
    artifacts = tracking.list_artifacts(ref["uri"], run.run_id)
    assert {"checkpoints", "images", "history"} <= set(artifacts)  # strips: stepped images
    # The store keeps the newest checkpoint (to resume elsewhere) and the final weights.
    assert tracking.list_artifacts(ref["uri"], run.run_id, "checkpoints") == [
        "checkpoints/generator.pth",
        "checkpoints/latest.pth",
    ]


def test_sigkill_at_a_random_step_then_rerun_reproduces_the_losses(full_run, tmp_path,
                                                                    sample_dataset):  # fmt: skip
    kill_after = random.Random().randint(3, 4)  # a checkpoint (step 2) exists by then
    process = _train(tmp_path, sample_dataset, train__iterations=5)
    _wait_rows(tmp_path, kill_after, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "run" / "generator.pth").exists()
    _finish(_train(tmp_path, sample_dataset, train__iterations=5), tmp_path)
    log = (tmp_path / "stage.log").read_text()
    assert "resuming from" in log, log[-2000:]
    reference = _losses(_history(full_run))[:5]  # the same trajectory, 5 of its 8 iterations
    assert _losses(_history(tmp_path)) == reference, f"killed after {kill_after}"
    first = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())["run_id"]
    runs = tracking.search_runs(tracking.tracking_uri(tmp_path / "mlruns"), ["test-train"])
    assert [r.run_id for r in runs] == [first], "the resumed session continues the same run"
    resumed_from = int(runs[0].tags["resumed_from"])
    assert resumed_from in {2, 4}
    # The killed session still counts: its snapshot at its last checkpoint joins the totals.
    record = json.loads((tmp_path / "run" / "cost_raw.json").read_text())
    (killed,) = record["previous_sessions"]
    assert killed["steps_total"] == resumed_from and killed["wall_s"] > 0
    typed = read_record(tmp_path / "run" / "cost_raw.json")
    summary = summarise(typed, load_params(tmp_path / "params.yaml").cost, "fp32")
    assert summary.sessions == 2 and summary.steps_total == 5
    assert summary.wall_h * 3600 > record["totals"]["wall_s"] + killed["wall_s"] - 1e-6


def test_ddp_with_two_gloo_processes_shards_the_global_batch(full_run, tmp_path, sample_dataset):
    process = _train(tmp_path, sample_dataset, train__iterations=2, train__batch_size=2,
                     train__nproc_per_node=2, train__checkpoint_every=2)  # fmt: skip
    _finish(process, tmp_path)
    log = (tmp_path / "stage.log").read_text()
    assert "torchrun" in log and "DDP: rank 0/2" in log
    ref = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())
    run = tracking.search_runs(ref["uri"], ["test-train"])[0]
    assert run.tags["world_size"] == "2"
    record = json.loads((tmp_path / "run" / "cost_raw.json").read_text())
    assert record["kind"] == "gathered" and record["world_size"] == 2
    assert [r["rank"] for r in record["ranks"]] == [0, 1]
    assert all(r["clips_per_step"] == 1 for r in record["ranks"])
    # Rank 0 draws global sample 0 at step 1 and both ranks start from the seeded weights, so
    # every loss computed before the first update equals the single-process run's.
    before_update = ("loss/hole", "loss/valid", "loss/flow", "loss/discriminator")
    ddp, single = _history(tmp_path)[0], _history(full_run)[0]
    for key in before_update:
        assert float(ddp[key]) == pytest.approx(float(single[key]), rel=1e-5), key


def test_mlflow_server_going_away_mid_run_loses_nothing(tmp_path, sample_dataset):
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    server = mlflow_server.start(uri, store / "artifacts", tmp_path / "server.log")
    try:
        env = _env(MLFLOW_TRACKING_URI=server.url)
        process = _train(tmp_path / "job", sample_dataset, env=env, train__iterations=4)
        _wait_rows(tmp_path / "job", 1, process)
    finally:
        mlflow_server.stop(server.process)
    _finish(process, tmp_path / "job")
    log = (tmp_path / "job" / "stage.log").read_text()
    assert log.count("unreachable (") == 1, "the outage is reported once"
    ref = json.loads((tmp_path / "job" / "run" / "mlflow_run.json").read_text())
    assert ref["run_id"] and ref["spool"], ref
    port = int(server.url.rsplit(":", 1)[1])
    server = mlflow_server.start(uri, store / "artifacts", tmp_path / "server2.log", port=port)
    try:
        logger = tracking.attach(server.url, ref["run_id"], Path(ref["spool"]))
        assert logger.close() and logger.run_id == ref["run_id"]
        header, spooled = read_records(Path(ref["spool"]))  # sent: only the header is left
        assert spooled == [] and header["run_id"] == ref["run_id"]
        history = tracking.metric_history(server.url, ref["run_id"], "loss/generator")
        artifacts = tracking.list_artifacts(server.url, ref["run_id"])
        status = tracking.search_runs(server.url, ["test-train"])[0].status
    finally:
        mlflow_server.stop(server.process)
    rows = _history(tmp_path / "job")
    assert [step for step, _ in history] == [1, 2, 3, 4]
    assert [v for _, v in history] == pytest.approx([float(r["loss/generator"]) for r in rows])
    assert "checkpoints" in artifacts and status == "FINISHED"
    assert torch.load(tmp_path / "job" / "run" / "generator.pth", weights_only=True)


def test_forecast_from_the_first_steps_predicts_the_rest_of_the_run(full_run, capsys):
    """The forecast from the first measured steps of the real sample-profile run vs
    the measured time of all its steps (one clip, one device: the plan is this run itself)."""
    record = json.loads((full_run / "run" / "cost_raw.json").read_text())
    (rank,) = record["ranks"]
    series = rank["series"]
    column = series["fields"].index("step_s")
    times = [row[column] for row in series["rows"] if row[column] is not None]
    assert len(times) == 7 and rank["steps"]["warmup"] == 1
    cfg = load_params(full_run / "params.yaml").cost
    plan = Schedule(iterations=len(times), global_batch=1, devices=1)
    first = StepSample.from_times(times[:3], clips_per_device=1)
    predicted = forecast(first, cfg, np.random.default_rng(0), plan, "cpu").wall_h
    error = predicted.mean * 3600 / sum(times) - 1
    with capsys.disabled():
        print(f"\nforecast of 7 sample-profile steps from the first 3: error {100 * error:+.1f} %"
              f" (band {predicted.low * 3600:.1f}-{predicted.high * 3600:.1f} s,"
              f" measured {sum(times):.1f} s)")  # fmt: skip
    assert abs(error) < 0.5  # shared CI cores are noisy; arithmetic slips are whole factors
