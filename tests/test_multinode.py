"""Two nodes on one machine: docs/operations.md's multi-node procedure, as written, then run.

The "nodes" are two process trees of the train stage (`train.nnodes: 2`, one gloo process per
node on the CPU, c10d rendezvous on 127.0.0.1) in one shared checkout, a fresh copy of this
repository. The reference is one node running two processes with the same global batch: the same
ranks, shards and all-reduces, so every logged loss and the final weights must match bit for bit.
Every process gets ``OMP_NUM_THREADS=1`` (torchrun sets it only with several processes per node),
so both jobs do the same arithmetic.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from helpers import ROOT, copy_repo, git_commit_all, write_params

from e2fgvi import tracking
from e2fgvi.config import Params, load_params
from e2fgvi.cost.summary import summarise
from e2fgvi.errors import UserError
from e2fgvi.measure.record import read_record
from e2fgvi.train import distributed, provenance
from e2fgvi.train.distributed import World

# The sample profile shrunk as in test_train_runs.py, with a global batch of 2 (one clip a rank).
JOB = {
    "train__num_local_frames": 2,
    "train__num_ref_frames": 1,
    "train__batch_size": 2,
    "train__iterations": 4,
    "train__log_every": 1,
    "train__image_every": 2,
    "train__checkpoint_every": 2,
    "train__deterministic": True,
    "train__nnodes": 2,
    "train__nproc_per_node": 1,
    "cost__warmup_steps": 1,
    "tracking__experiment": "test-nodes",
    "tracking__retry_interval_s": 0.0,
}
ONE_NODE = {**JOB, "train__nnodes": 1, "train__nproc_per_node": 2}
LIMIT_S = 1200  # a whole job on a loaded 2-core machine; a hang fails, it never blocks CI
REFUSAL = "is not running the job of rank 0's node"


# ------------------------------------------------------------------------- the documented commands


def _procedure() -> tuple[dict[str, str], list[str], list[str]]:
    """docs/operations.md, several nodes: the exports, node 0's command, the other nodes'."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("### Several nodes", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    export, node0, other = (line for line in block.splitlines() if not line.startswith("#"))
    words = shlex.split(export)
    assert words[0] == "export"
    return dict(word.split("=", 1) for word in words[1:]), shlex.split(node0), shlex.split(other)


def _stage_command() -> list[str]:
    """The train stage's ``cmd`` from dvc.yaml with its vars filled in."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    values = {key: value for block in dvc["vars"] for key, value in block.items()}
    command = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], dvc["stages"]["train"]["cmd"])
    return shlex.split(command)


def test_the_documented_commands_are_the_train_stage_and_dvc():
    exports, node0, other = _procedure()
    assert set(exports) == {"PET_RDZV_BACKEND", "PET_RDZV_ENDPOINT", "PET_RDZV_ID"}
    assert exports["PET_RDZV_BACKEND"] == "c10d"
    assert re.fullmatch(r"[\w.-]+:\d+", exports["PET_RDZV_ENDPOINT"])
    assert node0 == ["dvc", "repro", "train"]
    assert other == _stage_command()


# --------------------------------------------------------------------------- unit: the job check


def _identity(params: Params, node: int, host: str = "gpu-a") -> dict:
    return {**provenance.job_identity(params), "node": node, "host": host}


def test_a_node_with_other_params_or_code_is_refused_on_every_rank(monkeypatch, params):
    mine = _identity(params, 0)
    theirs = _identity(params.model_copy(update={"seed": 7}), 1, "gpu-b")
    theirs["training code"] = "0123456789abcdef"

    def gather(found: list, identity: dict) -> None:
        found[:] = [mine, theirs]

    monkeypatch.setattr(distributed.dist, "all_gather_object", gather)
    world = World(1, 0, 2, torch.device("cpu"))
    with pytest.raises(UserError) as refused:
        distributed.check_same_job(theirs, world)
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith(f"node 1 (gpu-b, rank 1) {REFUSAL} 0 (gpu-a)")
    assert "training code 0123456789abcdef (rank 0: " in line and "seed=7 (rank 0: 2021)" in line
    monkeypatch.setattr(distributed.dist, "all_gather_object", lambda f, i: f.__setitem__(
        slice(None), [mine, _identity(params, 1, "gpu-b")]))  # fmt: skip
    distributed.check_same_job(mine, World(0, 0, 2, torch.device("cpu")))  # same job: no error


def test_restarts_and_nodes_go_through_torchrun(monkeypatch):
    monkeypatch.setenv("PET_RDZV_ENDPOINT", "node0:29400")
    command = distributed.torchrun_command(1, 2, "m", [], max_restarts=3)
    assert "--max-restarts=3" in command and "--nnodes=2" in command
    train = load_params(ROOT / "params.yaml").train
    assert not distributed.needs_torchrun(train)  # the sample profile: one plain process
    assert distributed.needs_torchrun(train.model_copy(update={"max_restarts": 1}))
    assert distributed.needs_torchrun(train.model_copy(update={"nnodes": 2}))


# --------------------------------------------------------------------------- launching nodes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(src: Path, job: str) -> dict[str, str]:
    """The documented exports (node 0's address: this machine), the venv first on PATH."""
    exports, _, _ = _procedure()
    exports |= {"PET_RDZV_ENDPOINT": f"127.0.0.1:{_free_port()}", "PET_RDZV_ID": job}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(src), "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **exports, "OMP_NUM_THREADS": "1"}


class Nodes:
    """Process trees started here; every one still running is killed when the test ends."""

    def __init__(self) -> None:
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, command: list[str], cwd: Path, env: dict[str, str], log: Path):
        with log.open("a") as out:
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.started.append((process, log))
        return process

    def finish(self, limit_s: float = LIMIT_S) -> list[int]:
        """Exit statuses of every process started, in order (fails on a hang)."""
        deadline = time.monotonic() + limit_s
        for process, log in self.started:
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"a node hung; its log:\n{log.read_text()[-3000:]}")
        return [process.returncode for process, _ in self.started]

    def kill_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # each tree is its own session
                process.wait()


@contextmanager
def nodes() -> Iterator[Nodes]:
    launched = Nodes()
    try:
        yield launched
    finally:
        launched.kill_all()


def _logs(*logs: Path) -> str:
    return "\n".join(log.read_text() for log in logs)


def _assert_ok(codes: list[int], *logs: Path) -> None:
    assert codes == [0] * len(codes), _logs(*logs)[-6000:]


def _history(run: Path) -> list[dict[str, str]]:
    (found,) = run.glob("checkpoints/*/history.csv")
    with found.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _numbers(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Every loss and learning rate of every logged step, as the digits written."""
    keys = [k for k in rows[0] if k.startswith(("loss/", "lr/"))]
    assert "loss/hole" in keys and "loss/discriminator" in keys
    return [{"step": row["step"], **{k: row[k] for k in keys}} for row in rows]


def _same_weights(a: Path, b: Path) -> None:
    first, second = (torch.load(p, weights_only=True) for p in (a, b))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), "final weights differ"


def _stage_args(data: Path) -> list[str]:
    """The train stage's command in a folder of its own, on the shared checkout's data."""
    command = _stage_command()
    return [*command[: command.index("--data") + 1], str(data),
            *command[command.index("--data") + 2 :]]  # fmt: skip


# --------------------------------------------------------------------------- the jobs


@pytest.fixture(scope="module")
def checkout(module_folder) -> Path:
    """The shared checkout: a git copy of the repository with the two-node params."""
    copy = copy_repo(module_folder("checkout"))
    write_params(copy, **JOB)
    (copy / "dvc.lock").unlink(missing_ok=True)
    git_commit_all(copy)
    return copy


@pytest.fixture(scope="module")
def two_nodes(checkout) -> Path:
    """Node 0 and node 1 as documented: `dvc repro train` and the train stage's command."""
    _, node0, other = _procedure()
    env = _env(checkout / "src", "test-two-nodes")
    logs = checkout / "node0.log", checkout / "node1.log"
    with nodes() as launched:
        launched.start(node0, checkout, env, logs[0])
        launched.start(other, checkout, env, logs[1])
        _assert_ok(launched.finish(), *logs)
    return checkout


@pytest.fixture(scope="module")
def one_node(two_nodes, module_folder) -> Path:
    """The reference: one node, two processes, the same global batch and data."""
    folder = module_folder("one-node")
    write_params(folder, **ONE_NODE)
    env = _env(two_nodes / "src", "test-one-node")
    with nodes() as launched:
        launched.start(_stage_args(two_nodes / "data" / "youtube-vos"), folder, env,
                       folder / "stage.log")  # fmt: skip
        _assert_ok(launched.finish(), folder / "stage.log")
    return folder


def test_two_nodes_form_one_job(two_nodes):
    logs = _logs(two_nodes / "node0.log", two_nodes / "node1.log")
    assert "Running stage 'train'" in (two_nodes / "node0.log").read_text()
    # Rank 0 (on either node: c10d numbers the nodes as they join) logs; rank 1 only warnings.
    assert logs.count("DDP: rank 0/2") == 1 and "one job on 2 node(s)" in logs
    run = two_nodes / "data" / "run"
    # Checkpoints written once, by rank 0: one log line and one file per checkpoint.
    written = re.findall(r"checkpoint \S+/(ckpt_\d+\.pth)", logs)
    assert written == ["ckpt_0000002.pth", "ckpt_0000004.pth"]
    assert sorted(p.name for p in run.glob("checkpoints/*/ckpt_*.pth")) == written
    record = json.loads((run / "cost_raw.json").read_text())
    assert record["world_size"] == 2 and [r["rank"] for r in record["ranks"]] == [0, 1]
    assert all(r["clips_per_step"] == 1 for r in record["ranks"])
    assert record["totals"]["steps_total"] == 4
    ref = json.loads((run / "mlflow_run.json").read_text())
    (found,) = tracking.search_runs(tracking.tracking_uri(two_nodes / "mlruns"), ["test-nodes"])
    assert found.run_id == ref["run_id"] and found.status == "FINISHED"
    assert found.tags["world_size"] == "2" and found.params["train.nnodes"] == "2"
    history = tracking.metric_history(ref["uri"], found.run_id, "loss/hole")
    assert [step for step, _ in history] == [1, 2, 3, 4]
    lock = yaml.safe_load((two_nodes / "dvc.lock").read_text())
    assert "train" in lock["stages"], "DVC recorded the stage node 0 ran"


def test_two_nodes_compute_what_one_node_does(two_nodes, one_node):
    """Bit for bit: every loss and learning rate of every step, and the final weights."""
    assert "--standalone" in (one_node / "stage.log").read_text()
    two, one = _history(two_nodes / "data" / "run"), _history(one_node / "data" / "run")
    assert len(two) == 4 and _numbers(two) == _numbers(one)
    _same_weights(
        two_nodes / "data" / "run" / "generator.pth", one_node / "data" / "run" / "generator.pth"
    )


def _worker(launched: Nodes, rank: int) -> psutil.Process:
    """The training process of ``rank`` (a child of one node's torchrun agent)."""
    for process, _ in launched.started:
        for child in psutil.Process(process.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "e2fgvi" in " ".join(
                    child.cmdline()
                ):
                    return child
            except psutil.NoSuchProcess:
                continue
    raise AssertionError(f"no worker of rank {rank}")


def _wait_for(folder: Path, pattern: str, launched: Nodes, limit_s: float = LIMIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not list(folder.glob(pattern)):
        for process, log in launched.started:
            assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{pattern} never appeared"
        time.sleep(0.2)


def test_a_killed_worker_restarts_the_job_from_its_checkpoint(two_nodes, one_node, tmp_path):
    folder = tmp_path / "shared"
    write_params(folder, **JOB, train__max_restarts=1)
    command = _stage_args(two_nodes / "data" / "youtube-vos")
    env = _env(two_nodes / "src", "test-elastic")
    logs = folder / "node0.log", folder / "node1.log"
    with nodes() as launched:
        for log in logs:
            launched.start(command, folder, env, log)
        # The session's cost snapshot is written last at a checkpoint: checkpoint 2 is complete.
        _wait_for(folder, "data/run/checkpoints/*/cost/session_0000001.json", launched)
        _worker(launched, 1).send_signal(signal.SIGKILL)  # the worker, not its agent
        _assert_ok(launched.finish(), *logs)
    text = _logs(*logs)
    assert text.count("DDP: rank 0/2") == 2, "one restart of the whole job"
    assert "resuming from" in text and "(iteration 2)" in text
    run, reference = folder / "data" / "run", one_node / "data" / "run"
    assert _numbers(_history(run)) == _numbers(_history(reference))
    _same_weights(run / "generator.pth", reference / "generator.pth")
    ref = json.loads((run / "mlflow_run.json").read_text())
    (found,) = tracking.search_runs(tracking.tracking_uri(folder / "mlruns"), ["test-nodes"])
    assert found.run_id == ref["run_id"] and found.status == "FINISHED"
    assert found.tags["resumed_from"] == "2"
    record = read_record(run / "cost_raw.json")
    assert record.world_size == 2 and len(record.ranks) == 2
    (killed,) = record.previous_sessions
    assert killed.steps_total == 2 and killed.wall_s > 0
    summary = summarise(record, load_params(folder / "params.yaml").cost, "fp32")
    assert summary.sessions == 2 and summary.steps_total == 4


def test_a_node_from_another_checkout_is_refused_before_training(checkout, tmp_path):
    src = tmp_path / "other-src"
    shutil.copytree(checkout / "src", src)
    with (src / "e2fgvi" / "train" / "losses.py").open("a") as module:
        module.write("\n# an edit on node 1 only\n")
    folders = tmp_path / "node0", tmp_path / "node1"
    write_params(folders[0], **JOB)
    write_params(folders[1], **JOB, train__lr=2e-4)
    env = _env(checkout / "src", "test-refused")
    command = _stage_args(checkout / "data" / "youtube-vos")
    with nodes() as launched:
        launched.start(command, folders[0], env, folders[0] / "stage.log")
        launched.start(command, folders[1], {**env, "PYTHONPATH": str(src)},
                       folders[1] / "stage.log")  # fmt: skip
        codes = launched.finish()
    assert codes == [1, 1], "a refusal is a UserError on every node (status 1)"
    for folder in folders:
        lines = [
            line for line in (folder / "stage.log").read_text().splitlines() if REFUSAL in line
        ]
        assert len(lines) == 1, (folder / "stage.log").read_text()[-3000:]
        assert "training code" in lines[0] and "train.lr=" in lines[0]
        assert re.search(r"train\.lr=0\.000(1|2) \(rank 0: 0\.000(2|1)\)", lines[0]), lines[0]
        assert not (folder / "data").exists() and not (folder / "mlruns").exists()
