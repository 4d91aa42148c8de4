"""Distributed set-up: DDP under torchrun (one or many nodes), a plain process otherwise.

The global batch is split across ranks as the official trainer does (batch_size // world_size per
process); rank 0 alone logs, tracks and checkpoints.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from e2fgvi.devices import pick_device
from e2fgvi.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """Where this process sits: its ranks and its device."""

    rank: int
    local_rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_command(nproc_per_node: int, nnodes: int, module: str, argv: list[str]) -> list[str]:
    """The torchrun command line that relaunches ``python -m module argv`` on every device.

    Several nodes rendezvous through torchrun's own environment variables, set on every node:
    ``PET_RDZV_ENDPOINT=<node-0 host>:<port>`` and one ``PET_RDZV_ID`` per job
    (``PET_RDZV_BACKEND`` defaults to c10d here).
    """
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    command = [*torchrun.split(), f"--nproc-per-node={nproc_per_node}", f"--nnodes={nnodes}"]
    if nnodes > 1:
        if not os.environ.get("PET_RDZV_ENDPOINT"):
            raise UserError(
                f"train.nnodes is {nnodes}: set PET_RDZV_ENDPOINT=<node-0 host>:<port> and "
                "PET_RDZV_ID=<job name> on every node"
            )
        if not os.environ.get("PET_RDZV_BACKEND"):
            command.append("--rdzv-backend=c10d")
    else:
        command.append("--standalone")
    return [*command, "-m", module, *argv]


def init_world(wanted_device: str) -> World:
    """Join the process group when launched by torchrun; a single process otherwise."""
    if not under_torchrun():
        return World(0, 0, 1, pick_device(wanted_device, key="train.device"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    size = int(os.environ["WORLD_SIZE"])
    # Each rank takes its own GPU, cuda:<local rank>: NCCL refuses two ranks on one.
    device = pick_device(wanted_device, local_rank, key="train.device")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    log.info("DDP: rank %d/%d (local %d) on %s via %s", rank, size, local_rank, device, backend)
    return World(rank, local_rank, size, device)


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world: World) -> int:
    """The official split: batch_size // world_size clips per process (must divide evenly)."""
    if global_batch % world.size:
        raise UserError(
            f"train.batch_size {global_batch} does not split over {world.size} processes; "
            "make it a multiple of train.nproc_per_node * train.nnodes"
        )
    return global_batch // world.size


def any_rank(flag: bool, world: World) -> bool:
    """True when ``flag`` is true on at least one rank (all ranks must call it)."""
    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's ``value`` (picklable) on every rank (all ranks must call it)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=world.device)
    return box[0]


def node_rank() -> int:
    """This node's index (torchrun's ``GROUP_RANK``)."""
    return int(os.environ.get("GROUP_RANK", "0"))
