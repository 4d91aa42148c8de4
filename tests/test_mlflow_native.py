"""Runs as MLflow users expect them, against a real ``mlflow server``: names and source tags, the
System metrics tab (through an outage, and one node id per node), stepped images, and the
prepared data set as a run input whose digest is its DVC hash.

The registered generator model has its own module (test_mlflow_model.py); the whole story with
real DVC is in test_pipeline.py.
"""

from __future__ import annotations

import os
import subprocess
import time

import mlflow_server
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from helpers import ROOT

from e2fgvi import tracking
from e2fgvi.config import DataParams, load_params
from e2fgvi.data.lineage import prepared_dataset
from e2fgvi.tracking.client import client
from e2fgvi.train.distributed import World
from e2fgvi.train.telemetry import TRAIN_SOURCE, start_system_metrics

CPU_KEY = "system/cpu_utilization_percentage"


@pytest.fixture
def server(tracking_server):
    return tracking_server


def _git_repo(folder, branch):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    (folder / "f.txt").write_text("x")
    for command in (["init", "-q", "-b", branch], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run([*git, *command], cwd=folder, check=True)
    head = ["git", "rev-parse", "HEAD"]
    return subprocess.run(head, cwd=folder, capture_output=True, text=True).stdout.strip()


def test_run_name_is_the_param_else_the_dvc_experiment_else_branch_and_sha(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.run_name("", {}) == ""  # outside git: MLflow picks a random name
    sha = _git_repo(tmp_path, "lr-study")
    assert tracking.run_name("", {}) == f"lr-study-{sha[:7]}"
    assert tracking.run_name("", {"DVC_EXP_NAME": "try-lr"}) == "try-lr"
    assert tracking.run_name("mine", {"DVC_EXP_NAME": "try-lr"}) == "mine"


def test_source_tags_name_the_entry_point_the_start_commit_user_and_dvc_experiment(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    sha = _git_repo(tmp_path, "main")
    tags = tracking.source_tags(TRAIN_SOURCE, {})
    assert tags["mlflow.source.name"] == "src/e2fgvi/stages/train.py"
    assert tags["mlflow.source.git.commit"] == sha and tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert "dvc.exp.name" not in tags
    (tmp_path / "f.txt").write_text("edited")  # an experiment starts from its baseline commit
    env = {"DVC_EXP_NAME": "try-lr", "DVC_EXP_BASELINE_REV": "b" * 40}
    tags = tracking.source_tags(TRAIN_SOURCE, env)
    assert tags["mlflow.source.git.commit"] == "b" * 40
    assert tags["dvc.exp.name"] == "try-lr" and tags["dvc.exp.baseline_rev"] == "b" * 40


def test_a_relative_store_is_the_dvc_projects_under_a_queued_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking.store_dir("mlruns") == tmp_path / "mlruns"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "project"))  # as dvc sets it in .dvc/tmp/exps
    assert tracking.store_dir("mlruns") == tmp_path / "project" / "mlruns"
    assert tracking.store_dir(tmp_path / "abs") == tmp_path / "abs"


def test_system_metrics_never_block_on_a_dead_server_and_arrive_after_it(tmp_path, server):
    dead = f"http://127.0.0.1:{mlflow_server.free_port()}"
    spool = tmp_path / "spool.jsonl"
    logger = tracking.RunLogger(dead, "system-outage", spool=spool, retry_interval_s=0.0)
    monitor = tracking.SystemMetrics(logger, interval_s=0.2)
    begin = time.monotonic()
    monitor.start()
    time.sleep(1.5)
    monitor.stop()
    assert time.monotonic() - begin < 6  # stop() does not wait on the server
    assert logger.close() is False and spool.exists()
    run_id = tracking.replay_spool(spool, server.url)
    history = tracking.metric_history(server.url, run_id, CPU_KEY)
    assert len(history) >= 3, history
    assert [step for step, _ in history] == list(range(len(history)))
    assert all(0 <= value <= 100 for _, value in history)
    keys = client(server.url).get_run(run_id).data.metrics
    assert "system/system_memory_usage_megabytes" in keys


def _node(rank: int, port: int, url: str, run_file: str) -> None:
    """One 'node' of a two-node job (local rank 0 on each), as torchrun would start it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GROUP_RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(
        update={
            "train": params.train.model_copy(update={"nnodes": 2}),
            "tracking": params.tracking.model_copy(update={"system_metrics_interval_s": 0.3}),
        }
    )
    run = None
    if rank == 0:
        run = tracking.RunLogger(url, "two-nodes")
        run.set_tags({"made": "here"})
        assert run.flush()  # the sender thread creates runs; this sends now, on this thread
        with open(run_file, "w") as handle:
            handle.write(run.run_id)
    world = World(rank, 0, 2, torch.device("cpu"))
    monitor = start_system_metrics(run, params, world, resumed=False)
    time.sleep(1.2)
    monitor.stop()
    if run is not None:
        assert run.close()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_every_node_logs_its_system_metrics_into_rank_0s_run(tmp_path, server):
    run_file = tmp_path / "run_id"
    port = mlflow_server.free_port()
    mp.spawn(_node, args=(port, server.url, str(run_file)), nprocs=2, join=True)
    keys = client(server.url).get_run(run_file.read_text()).data.metrics
    assert f"system/node_0/{CPU_KEY[7:]}" in keys and f"system/node_1/{CPU_KEY[7:]}" in keys
    assert CPU_KEY not in keys


def test_sample_strips_are_stepped_images(tmp_path, server):
    from PIL import Image

    logger = tracking.RunLogger(server.url, "images")
    for step, shade in ((10, 40), (20, 200)):
        Image.new("RGB", (24, 8), (shade, shade, shade)).save(tmp_path / f"s{step}.png")
        logger.log_image(tmp_path / f"s{step}.png", key="samples", step=step)
    assert logger.close()
    files = tracking.list_artifacts(server.url, logger.run_id, "images")
    for step in (10, 20):  # a full PNG and the UI's compressed copy per step
        mine = [f for f in files if f.startswith(f"images/samples+step+{step}+")]
        assert len(mine) == 2 and {f.rsplit(".", 1)[1] for f in mine} == {"png", "webp"}
    assert client(server.url).get_run(logger.run_id).data.tags["mlflow.loggedImages"] == "True"


def _lock(tmp_path, frames_md5):
    lock = {
        "schema": "2.0",
        "stages": {
            "prepare": {
                "cmd": "python -m e2fgvi.stages.prepare",
                "outs": [
                    {"path": "data/youtube-vos/JPEGImages", "hash": "md5", "md5": frames_md5,
                     "size": 1234, "nfiles": 10},
                    {"path": "data/youtube-vos/train.json", "hash": "md5", "md5": "a" * 32,
                     "size": 163},
                ],
            }
        },
    }  # fmt: skip
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    return tmp_path / "dvc.lock"


def test_the_prepared_data_is_a_run_input_with_its_dvc_hash(tmp_path, server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    digest = "b80a98ea29b13abe364a0d35bbdaa45c.dir"
    lock = _lock(tmp_path, digest)
    dataset = prepared_dataset(lock, tmp_path / "data" / "youtube-vos", DataParams(source="sample"))
    assert dataset["digest"] == digest and dataset["source_type"] == "code"
    logger = tracking.RunLogger(server.url, "lineage")
    logger.log_dataset(dataset, context="training")
    assert logger.close()
    (found,) = client(server.url).get_run(logger.run_id).inputs.dataset_inputs
    assert found.dataset.digest == digest and found.dataset.name == "e2fgvi-sample-train"
    assert '"train_videos"' in found.dataset.source
    assert '"nfiles": 10' in found.dataset.profile and "a" * 32 in found.dataset.profile
    assert [(t.key, t.value) for t in found.tags] == [("mlflow.data.context", "training")]
    url = DataParams(source="url", train={"location": "https://x.example/train_all_frames.zip"})
    assert prepared_dataset(lock, tmp_path / "data" / "youtube-vos", url)["source_type"] == "http"
    # Run outside DVC (no entry for this folder): no input, no error.
    assert prepared_dataset(lock, tmp_path / "elsewhere", DataParams()) is None
    assert prepared_dataset(tmp_path / "missing.lock", tmp_path, DataParams()) is None
