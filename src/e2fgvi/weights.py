"""The one reader of weight files and the one checkpoint-format constant (a leaf module).

Every weight or checkpoint file the bundle opens goes through ``read_weights``, that is
``torch.load(weights_only=True)``, so a pickle that carries code is refused before anything in
it runs, and every failure is one line naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from e2fgvi.errors import UserError, clip

# Written into every file this bundle saves (training checkpoints and released generators).
CHECKPOINT_FORMAT = "e2fgvi-repro/1"


def read_weights(path: str | Path) -> Any:
    """``torch.load`` with weights_only=True on CPU; every failure is a one-line UserError."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: refused: the file is not plain weights (it would run code when "
            f"unpickled: {clip(reason, 120)}); use an official release or an e2fgvi-repro "
            "checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable PyTorch weights file ({clip(exc, 120)})") from None
