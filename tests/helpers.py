"""Functions tests share: params files with overrides, repository copies, train-stage processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_params(folder: Path, **overrides) -> Path:
    """The repository's params.yaml with dotted-key overrides (``train__lr=...``) in ``folder``."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for part in parents:
            node = node[part]
        assert leaf in node, f"no such param {dotted}"
        node[leaf] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def copy_repo(dest: Path) -> Path:
    """The repository's tracked (and new, not ignored) files as a fresh one-commit git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    for name in listed.stdout.splitlines():
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def git_commit_all(folder: Path) -> None:
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run([*git, *command], cwd=folder, check=True)


# --------------------------------------------------------------------------- train-stage processes

# The smallest real training: the sample-size E2FGVI-HQ with 2 local + 1 reference frames.
TINY = {
    "train__num_local_frames": 2,
    "train__num_ref_frames": 1,
    "train__log_every": 1,
    "train__image_every": 2,
    "train__checkpoint_every": 2,
    "train__deterministic": True,
    "cost__warmup_steps": 1,
    "tracking__experiment": "test-train",
    "tracking__retry_interval_s": 0.0,
}


def train_command(data: Path) -> list[str]:
    """The train stage's command line, with every output under the current folder."""
    return [sys.executable, "-m", "e2fgvi.stages.train", "--data", str(data),
            "--spynet", "spynet.pth", "--checkpoints", "run/checkpoints",
            "--generator", "run/generator.pth", "--cost-record", "run/cost_raw.json",
            "--run-record", "run/mlflow_run.json", "--params-used", "run/params_used.json",
            "--mlruns", "mlruns", "--metrics", "train.json",
            "--plots", "train_loss.csv"]  # fmt: skip


def train_env(**extra: str) -> dict[str, str]:
    """This checkout's package on the path; no tracking URI unless ``extra`` sets one."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PATH": path}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **extra}


_LAUNCH_PATCHED = """
import runpy, sys
sys.argv = sys.argv[1:]
runpy.run_module("e2fgvi.stages.train", run_name="__main__", alter_sys=True)
"""


def run_train(
    folder: Path, data: Path, patch: str = "", env: dict | None = None, **overrides
) -> dict[str, object]:
    """The train stage to its end in ``folder`` (the repository's params with ``overrides``);
    ``patch`` is Python run first in the stage's process (a monkeypatch). Returns train.json."""
    write_params(folder, **overrides)
    command = train_command(data)
    if patch:
        command[1:3] = ["-c", patch + _LAUNCH_PATCHED, "e2fgvi.stages.train"]
    done = subprocess.run(command, cwd=folder, env=env or train_env(), capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / "train.json").read_text())


def start_train(folder: Path, data: Path, env: dict | None = None, **overrides) -> subprocess.Popen:
    """The train stage as its own process (group) in ``folder``, with ``TINY`` + ``overrides``."""
    write_params(folder, **{**TINY, **overrides})
    log = (folder / "stage.log").open("a")
    return subprocess.Popen(train_command(data), cwd=folder, env=env or train_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint)  # fmt: skip


def _default_sigint() -> None:
    """Ctrl-C's default action in the child even when this test run ignores SIGINT (a suite
    started in the background, `nohup`, inherits SIG_IGN, and Python then keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish_train(process: subprocess.Popen, folder: Path, timeout: float = 900) -> None:
    code = process.wait(timeout=timeout)
    assert code == 0, (folder / "stage.log").read_text()[-3000:]


def history_rows(folder: Path) -> list[dict[str, str]]:
    """The loss history of the (only) configuration trained in ``folder``."""
    found = list((folder / "run" / "checkpoints").glob("*/history.csv"))
    if not found:
        return []
    with found[0].open(newline="") as handle:
        return list(csv.DictReader(handle))


def wait_rows(folder: Path, rows: int, process: subprocess.Popen, limit_s: float = 900) -> None:
    """Wait until the history holds ``rows`` rows (the process must keep running)."""
    deadline = time.monotonic() + limit_s
    while len(history_rows(folder)) < rows:
        assert process.poll() is None, (folder / "stage.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.2)
