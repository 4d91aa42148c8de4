"""Training checkpoints: atomic, rotating, complete enough to resume bit-for-bit.

A checkpoint is one file ``ckpt_<step>.pth`` holding a plain dict of tensors and Python
primitives (so it loads with ``weights_only=True``): model and optimizer states, schedulers, AMP
scalers, every RNG state, the step, the params hash, the git commit and the MLflow run id.
The generator state sits under ``"generator"``, which is what ``load_generator_state`` reads.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2fgvi.atomic import atomic_open
from e2fgvi.errors import UserError
from e2fgvi.weights import CHECKPOINT_FORMAT, read_weights

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt_(\d{7,})\.pth$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"ckpt_{step:07d}.pth"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def all_finite(module: torch.nn.Module) -> bool:
    """True when every floating parameter and buffer is finite (one host sync)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; keep only the newest ``keep``."""
    path = checkpoint_path(folder, step)
    with atomic_open(path, "wb") as handle:
        torch.save({"format": CHECKPOINT_FORMAT, "step": step, **state}, handle)
    for _, old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    log.info("checkpoint %s", path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load one of our checkpoints (never unpickling code)."""
    try:
        state = read_weights(path)
    except UserError as exc:  # a corrupt or truncated file, e.g. from a full disk
        reason = str(exc).removeprefix(f"{path}: ")
        raise UserError(
            f"{path}: not a loadable checkpoint; delete it to resume from the previous one "
            f"({reason})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path}: not an e2fgvi-repro training checkpoint (format {CHECKPOINT_FORMAT}); "
            f"move it out of {path.parent}: training resumes only from checkpoints it wrote"
        )
    return state


def rng_state(numpy_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Every RNG the training touches: torch CPU, every CUDA device, and an optional numpy one."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if numpy_rng is not None:
        state["numpy"] = numpy_rng.bit_generator.state
    return state


def restore_rng_state(state: dict[str, Any], numpy_rng: np.random.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if numpy_rng is not None and "numpy" in state:
        numpy_rng.bit_generator.state = state["numpy"]
