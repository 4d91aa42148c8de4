"""Distributed set-up: DDP under torchrun (one or many nodes), a plain process otherwise.

The global batch is split across ranks as the official trainer does (batch_size // world_size per
process); rank 0 alone logs, tracks and checkpoints. Before any other collective every rank
shows the others its training code, git commit and params, so a node started from another
checkout is refused on every node before a training step (``check_same_job``).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.run as torchrun
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from e2fgvi.config import TrainParams
from e2fgvi.devices import pick_device
from e2fgvi.errors import REFUSED, UserError

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


def needs_torchrun(cfg: TrainParams) -> bool:
    """Several processes or nodes, or restarts of a failed worker: torchrun's jobs."""
    return cfg.nproc_per_node > 1 or cfg.nnodes > 1 or cfg.max_restarts > 0


def torchrun_command(
    nproc_per_node: int, nnodes: int, module: str, argv: list[str], max_restarts: int = 0
) -> list[str]:
    """The torchrun command line that relaunches ``python -m module argv`` on every device.

    ``launch`` runs it in this process (the same as running it in a shell).

    Several nodes rendezvous through torchrun's own environment variables, set on every node:
    ``PET_RDZV_ENDPOINT=<node-0 host>:<port>`` and one ``PET_RDZV_ID`` per job
    (``PET_RDZV_BACKEND`` defaults to c10d here, which ranks the nodes as they join).
    ``max_restarts``: how often torchrun restarts every node's workers after one fails.
    """
    command = [
        "torchrun",
        f"--nproc-per-node={nproc_per_node}",
        f"--nnodes={nnodes}",
        f"--max-restarts={max_restarts}",
    ]
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


def launch(command: list[str]) -> int:
    """Run ``torchrun_command``'s command in this process, which becomes torchrun's agent.

    Returns the job's exit status: 0, or the first failed worker's (1 for a refused job, as
    without torchrun). A worker's error is its own log lines; this adds one line in place of
    torchrun's traceback, none for status 1 (a refusal's one line, or a crash's own traceback,
    says it all).
    """
    # By default torchrun's agents hand their workers one TCP store for the whole job. After a
    # restart in which one node counted a failure and another only a membership change, the
    # workers' gloo set-up found the previous attempt's keys there and waited forever (seen in
    # tests/test_multinode.py). A fresh store per rendezvous round, hosted by rank 0's worker,
    # has no stale keys.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    try:
        torchrun.run(torchrun.parse_args(command[1:]))
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        if failure.exitcode != REFUSED:
            how = (
                f"was killed by signal {-failure.exitcode}"
                if failure.exitcode < 0
                else f"exited with status {failure.exitcode}"
            )
            log.error("torchrun: rank %d (pid %d) %s; the job stopped", rank, failure.pid, how)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


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
    if dist.is_initialized():  # also a group of one (one process under torchrun, for restarts)
        dist.destroy_process_group()


def check_same_job(identity: dict[str, Any], world: World) -> None:
    """Refuse, with the same one line on every rank, a job whose ranks differ from rank 0.

    ``identity``: this rank's ``provenance.job_identity``.

    The first collective of a session (all ranks must call it): a mismatch stops every node
    before any training step.
    """
    if not world.distributed:
        return
    found: list[Any] = [None] * world.size
    dist.all_gather_object(found, identity)
    first = found[0]
    odd = [(rank, other) for rank, other in enumerate(found) if _differences(first, other)]
    if odd:
        rank, other = odd[0]
        more = f" (and {len(odd) - 1} more rank(s))" if len(odd) > 1 else ""
        raise UserError(
            f"node {other['node']} ({other['host']}, rank {rank}){more} is not running the job "
            f"of rank 0's node {first['node']} ({first['host']}): "
            f"{'; '.join(_differences(first, other))}; start every node from the same checkout "
            "and params.yaml (docs/operations.md, several nodes)"
        )
    if world.is_main:
        hosts = sorted({(i["node"], i["host"]) for i in found})
        nodes = ", ".join(f"node {node} {host}" for node, host in hosts)
        log.info("one job on %d node(s) (%s): same code, commit and params", len(hosts), nodes)


def _differences(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """What ``other`` runs differently from ``first``, in words (empty when nothing)."""
    found = [
        f"{key} {other[key]} (rank 0: {first[key]})"
        for key in ("training code", "git commit")
        if other[key] != first[key]
    ]
    mine, theirs = first["params"], other["params"]
    keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if keys:
        shown = ", ".join(f"{k}={theirs.get(k)!r} (rank 0: {mine.get(k)!r})" for k in keys[:3])
        found.append(f"params {shown}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else ""))
    return found


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
