"""The MLflow record stays right when the tracking server misbehaves or training stops early.

Real parts only: train-stage processes (the tiny sample configuration of ``helpers.TINY``), a
real ``mlflow server``, a real hung server (``mlflow_server.BlackHole``), real signals, and
``dvc repro`` in a copy of the repository.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import mlflow_server
import pytest
import torch
import yaml
from _stages import call_stage
from helpers import (
    TINY,
    copy_repo,
    finish_train,
    git_commit_all,
    history_rows,
    start_train,
    train_command,
    train_env,
    wait_rows,
    write_params,
)

from e2fgvi import tracking
from e2fgvi.stages import train as train_stage
from e2fgvi.tracking.spool import read_records

pytestmark = pytest.mark.slow


def _reference(folder: Path) -> dict:
    return json.loads((folder / "run" / "mlflow_run.json").read_text())


# --------------------------------------------------------------------------- a hung server


def _overheads(folder: Path) -> list[float]:
    """Per measured step: wall time outside data loading and compute (logging, checkpoints)."""
    record = json.loads((folder / "run" / "cost_raw.json").read_text())
    series = record["ranks"][0]["series"]
    column = {name: i for i, name in enumerate(series["fields"])}
    return [
        row[column["step_s"]] - row[column["data_s"]] - row[column["compute_s"]]
        for row in series["rows"]
    ]


def _log_time(log: str, logger: str, message: str) -> datetime:
    """When the last line of ``logger`` starting with ``message`` was logged."""
    stamps = re.findall(rf"(\d\d:\d\d:\d\d) INFO {re.escape(logger)}: {message}", log)
    return datetime.strptime(stamps[-1], "%H:%M:%S")


def _finishing_s(folder: Path) -> float:
    """Seconds from the last checkpoint to the stage's last line (weights, run end, spool)."""
    log = (folder / "stage.log").read_text()
    last_checkpoint = _log_time(log, "e2fgvi.train.checkpoint", "checkpoint ")
    done = _log_time(log, "e2fgvi.stages.train", "trained ")
    return (done - last_checkpoint).total_seconds() % 86400


def test_a_server_that_never_answers_does_not_slow_training(tmp_path, sample_dataset, capsys):
    timeout_s = 20  # each request to the hung server waits this long
    figures = {}
    with mlflow_server.BlackHole() as hole:
        for name, uri in (("no server", None), ("hung server", hole.url)):
            extra = {"MLFLOW_TRACKING_URI": uri} if uri else {}
            env = train_env(MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout_s), **extra)
            folder = tmp_path / name.replace(" ", "_")
            begin = time.monotonic()
            finish_train(start_train(folder, sample_dataset, env, train__iterations=4), folder)
            wall = time.monotonic() - begin
            overheads = _overheads(folder)
            figures[name] = (wall, statistics.median(overheads), max(overheads))
            figures[name] += (_finishing_s(folder),)
        assert hole.accepted >= 1
    with capsys.disabled():
        for name, (wall, median, worst, finishing) in figures.items():
            print(
                f"\n{name}: stage {wall:.1f} s; per step outside compute: median {median:.3f} s, "
                f"max {worst:.3f} s; last checkpoint to exit {finishing:.0f} s"
            )
    _, median, worst, finishing = figures["hung server"]
    assert worst < timeout_s / 4, "a step waited for the hung server"
    # The request in flight when training ends (here the run's creation, sent when training
    # began) is waited for at most its timeout, never once per queued record or retry.
    assert finishing < timeout_s, "the end of training waited for the hung server"
    # Everything is spooled for later, and of the two checkpoints only the newest is kept.
    reference = _reference(tmp_path / "hung_server")
    header, records = read_records(Path(reference["spool"]))
    assert reference["run_id"] is None and header["uri"] == hole.url
    steps = sorted({r["step"] for r in records if r["op"] == "metrics" and "loss/hole" in
                    r["values"]})  # fmt: skip
    assert steps == [1, 2, 3, 4] and records[-1] == {"op": "end", "status": "FINISHED"}
    uploads = [(r["dir"], Path(r["path"]).name) for r in records if r["op"] == "artifact"]
    assert uploads.count(("checkpoints", "latest.pth")) == 1
    assert ("checkpoints", "generator.pth") in uploads
    (latest,) = [
        r["path"] for r in records if r["op"] == "artifact" and Path(r["path"]).name == "latest.pth"
    ]
    assert torch.load(latest, weights_only=True)["step"] == 4


# --------------------------------------------------------------------------- stops and crashes


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_killed_with_its_records_sent(tmp_path, sample_dataset, signum):
    process = start_train(tmp_path, sample_dataset, train__iterations=50)
    wait_rows(tmp_path, 2, process)
    os.kill(process.pid, signum)
    code = process.wait(timeout=300)
    log = (tmp_path / "stage.log").read_text()
    assert code != 0 and "Traceback" not in log, log[-3000:]
    uri = tracking.tracking_uri(tmp_path / "mlruns")
    (run,) = tracking.search_runs(uri, ["test-train"])
    assert run.status == "KILLED"
    logged = [step for step, _ in tracking.metric_history(uri, run.run_id, "loss/hole")]
    assert logged == [int(row["step"]) for row in history_rows(tmp_path)]


def _in_process_train(folder: Path, data: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    write_params(folder, **{**TINY, "train__iterations": 2, "train__deterministic": False})
    call_stage(train_stage, train_command(data)[3:])


def test_a_crash_before_the_first_checkpoint_fails_the_run_and_the_rerun_continues_it(
    tmp_path, sample_dataset, monkeypatch
):
    """An out-of-memory error at the first step: FAILED, not RUNNING; the rerun, same run."""
    from e2fgvi.train import session

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(session, "train_step", out_of_memory)
        with pytest.raises(torch.OutOfMemoryError):
            _in_process_train(tmp_path, sample_dataset, monkeypatch)
    assert not list((tmp_path / "run" / "checkpoints").glob("*/ckpt_*.pth"))
    uri = tracking.tracking_uri(tmp_path / "mlruns")
    (failed,) = tracking.search_runs(uri, ["test-train"])
    assert failed.status == "FAILED" and "OutOfMemoryError" in failed.tags["failure"]

    _in_process_train(tmp_path, sample_dataset, monkeypatch)
    (run,) = tracking.search_runs(uri, ["test-train"])
    assert run.run_id == failed.run_id == _reference(tmp_path)["run_id"]
    assert run.status == "FINISHED" and run.params["train.iterations"] == "2"
    assert [s for s, _ in tracking.metric_history(uri, run.run_id, "loss/hole")] == [1, 2]


# --------------------------------------------------------------------------- replays


def test_a_later_experiment_never_logs_into_a_replayed_run(tmp_path, sample_dataset):
    """Experiment A trains while the server is down; B (another lr) after it is back."""
    port = mlflow_server.free_port()
    url = f"http://127.0.0.1:{port}"
    env = train_env(MLFLOW_TRACKING_URI=url)
    finish_train(start_train(tmp_path, sample_dataset, env, train__iterations=2), tmp_path)
    spooled = _reference(tmp_path)
    assert spooled["run_id"] is None
    store = tmp_path / "store"
    store.mkdir()
    server = mlflow_server.start(f"sqlite:///{store / 'mlflow.db'}", store / "artifacts",
                                 tmp_path / "server.log", port=port)  # fmt: skip
    try:
        process = start_train(tmp_path, sample_dataset, env, train__iterations=2, train__lr=2e-4)
        finish_train(process, tmp_path)
        runs = {r.params.get("train.lr"): r for r in tracking.search_runs(url, ["test-train"])}
        later = _reference(tmp_path)["run_id"]
        history = tracking.metric_history(url, later, "loss/hole")
    finally:
        mlflow_server.stop(server.process)
    assert sorted(runs) == ["0.0001", "0.0002"], "the two experiments share one run"
    first = read_records(Path(spooled["spool"]))[0]["run_id"]  # A's spool, replayed
    assert runs["0.0002"].run_id == later and runs["0.0001"].run_id == first != later
    assert all(r.status == "FINISHED" for r in runs.values())
    assert [step for step, _ in history] == [1, 2]


# --------------------------------------------------------------------------- dvc repro

SHRINK = {
    "train": {"iterations": 2, "num_local_frames": 2, "num_ref_frames": 1, "checkpoint_every": 2,
              "image_every": 2},
    "eval": {"max_videos": 1},
    "cost": {"warmup_steps": 1},
    "tracking": {"experiment": "offline-test"},
}  # fmt: skip


def _dvc(copy: Path, env: dict[str, str], *args: str) -> str:
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**env, "PYTHONPATH": str(copy / "src"), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([dvc, *args], cwd=copy, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def test_dvc_repro_after_a_server_outage_attaches_evaluate_and_cost_to_the_run(tmp_path):
    copy = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((copy / "params.yaml").read_text())
    for section, values in SHRINK.items():
        params[section].update(values)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (copy / "dvc.lock").unlink(missing_ok=True)
    git_commit_all(copy)
    port = mlflow_server.free_port()
    url = f"http://127.0.0.1:{port}"
    env = train_env(MLFLOW_TRACKING_URI=url)
    _dvc(copy, env, "repro", "train")  # the server is down
    reference = json.loads((copy / "data" / "run" / "mlflow_run.json").read_text())
    assert reference["run_id"] is None
    store = tmp_path / "store"
    store.mkdir()
    server = mlflow_server.start(f"sqlite:///{store / 'mlflow.db'}", store / "artifacts",
                                 tmp_path / "server.log", port=port)  # fmt: skip
    try:
        output = _dvc(copy, env, "repro", "evaluate", "cost")
        assert "Running stage 'train'" not in output
        assert "Running stage 'evaluate'" in output and "Running stage 'cost'" in output
        (run,) = tracking.search_runs(url, ["offline-test"])
        history = tracking.metric_history(url, run.run_id, "loss/hole")
        status = _dvc(copy, env, "status", "cost")  # cost and every stage before it
    finally:
        mlflow_server.stop(server.process)
    assert run.status == "FINISHED" and run.params["train.iterations"] == "2"
    assert [step for step, _ in history] == [1, 2]
    for metric in ("eval/psnr", "measured/step_time_median_s"):
        assert metric in run.metrics, metric
    assert "up to date" in status, status
    after = json.loads((copy / "data" / "run" / "mlflow_run.json").read_text())
    assert after == reference  # a DVC output of train: unchanged
