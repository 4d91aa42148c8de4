"""The one device picker: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` to a ``torch.device``."""

from __future__ import annotations

import logging

import torch

from e2fgvi.errors import UserError

log = logging.getLogger(__name__)


def pick_device(wanted: str = "auto", local_rank: int = 0, *, key: str = "device") -> torch.device:
    """This process's device; ``auto`` takes GPU ``local_rank`` when CUDA is usable, else the CPU.

    ``key`` names where ``wanted`` came from (a params key or a flag) in the one-line errors.
    A process that gets a GPU also makes it the current CUDA device.
    """
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{key} is {wanted!r} but no CUDA device is visible; use 'auto' or 'cpu'")
    if wanted == "cpu" or not torch.cuda.is_available():
        if wanted == "auto":
            log.info("no CUDA device: running on the CPU")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    index = int(wanted.split(":", 1)[1]) if ":" in wanted else local_rank
    if index >= count:  # NCCL refuses two ranks on one GPU ("Duplicate GPU detected")
        raise UserError(
            f"{key}: process needs GPU {index} but {count} are visible; run at most {count} "
            "processes per node (train.nproc_per_node), or use 'cpu'"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
