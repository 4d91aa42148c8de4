"""What ran: git commit, library versions and device, recorded as MLflow tags and in checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from e2fgvi.config import Params, flatten

# Keys that only change how long or how verbosely training runs; a changed value still resumes.
RESUME_EXEMPT = frozenset(
    {
        "iterations",
        "resume_any_code",
        "log_every",
        "image_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_workers",
        "max_restarts",
    }
)


def git_commit() -> str:
    """HEAD of the working tree (``+dirty`` when it has uncommitted changes), or 'unknown'."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def resume_key(params: Params) -> str:
    """Hash of every param that changes the training trajectory (the checkpoint folder name)."""
    blob = {
        "seed": params.seed,
        "masks": params.masks.model_dump(),
        "model": params.model.model_dump(),
        "train": params.train.model_dump(exclude=set(RESUME_EXEMPT)),
        "loss": params.loss.model_dump(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


# The package modules whose code decides the training trajectory: the model, one iteration
# (steps: forward, losses, guarded updates), optimizers and schedules, network set-up and
# numerics, the loop's order, and the clips it is fed. Not logging, cost, checkpoint or data
# preparation code: editing those must not refuse a resume.
_TRAJECTORY_CODE = (
    "model",
    "train/losses.py",
    "train/steps.py",
    "train/optim.py",
    "train/nets.py",
    "train/precision.py",
    "train/loop.py",
    "data/dataset.py",
    "data/masks.py",
    "data/frames.py",
)


def code_fingerprint() -> str:
    """Hash of the training-trajectory source files (stored in checkpoints, tagged on the run)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for entry in _TRAJECTORY_CODE:
        path = package / entry
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def environment_tags(device: torch.device, world_size: int) -> dict[str, Any]:
    """Library versions and the device, as MLflow tags."""
    tags: dict[str, Any] = {
        "git.commit": git_commit(),
        "code_fingerprint": code_fingerprint(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none",
        "python": platform.python_version(),
        "host": platform.node(),
        "world_size": world_size,
    }
    if device.type == "cuda":
        tags["device.name"] = torch.cuda.get_device_name(device)
    else:
        tags["device.name"] = platform.processor() or platform.machine()
    return tags


def job_identity(params: Params) -> dict[str, Any]:
    """What every node of one job must share (training code, git commit, params), and where."""
    return {
        "host": platform.node(),
        "node": int(os.environ.get("GROUP_RANK", "0")),  # torchrun's number of this node
        "training code": code_fingerprint(),
        "git commit": git_commit(),
        "params": flatten(params),
    }
