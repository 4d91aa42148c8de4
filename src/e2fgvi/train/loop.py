"""The training loop: ``train(params, paths) -> metrics``, built from small functions.

Per iteration (reference §4): generator forward, discriminator update, generator update, both
LR schedules stepped. Rank 0 logs to MLflow, writes the loss history and checkpoints; a rerun
resumes from the newest checkpoint of the same configuration automatically.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from e2fgvi.config import Params
from e2fgvi.data.dataset import StepSampler, TrainClips
from e2fgvi.train import checkpoint, losses, precision
from e2fgvi.train.distributed import World, any_rank, barrier, per_rank_batch
from e2fgvi.train.nets import Nets, frozen, load_state_dict, state_dict, unwrap
from e2fgvi.train.steps import (
    Clips,
    apply_update,
    discriminator_step,
    generator_forward,
    generator_step,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPaths:
    """Where training reads and writes (all given by dvc.yaml through the stage's arguments)."""

    frames: Path  # data/youtube-vos/JPEGImages
    index: Path  # data/youtube-vos/train.json
    spynet: Path | None  # pretrained SPyNet file
    checkpoints: Path  # data/run/checkpoints/<resume key>


@dataclass
class StepResult:
    """Detached losses and norms of one iteration, plus what the guard did."""

    values: dict[str, Tensor]
    skipped: int = 0


def make_loader(params: Params, paths: TrainPaths, world: World, start: int) -> Iterator:
    """Batches for this rank from iteration ``start`` on (exact resume: indices are global)."""
    cfg = params.train
    dataset = TrainClips(paths.frames, paths.index, cfg, params.masks, params.seed)
    per_rank = per_rank_batch(cfg.batch_size, world)
    sampler = StepSampler(start, cfg.iterations, cfg.batch_size, world.rank, world.size)
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=world.device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        drop_last=True,
    )
    return iter(loader)


def _finite(loss: Tensor, world: World) -> bool:
    """One host sync per update: is the loss finite on every rank?"""
    return not any_rank(not bool(torch.isfinite(loss)), world)


def train_step(nets: Nets, clips: Clips, params: Params, world: World) -> StepResult:
    """One official iteration: G forward, D update, G update (with the updated D), schedules."""
    amp = precision.autocast(params.train, world.device)
    out = generator_forward(nets.generator, clips, amp)
    teacher = (torch.zeros_like(out.flows[0]), torch.zeros_like(out.flows[1]))
    if nets.teacher is not None:
        teacher = losses.teacher_flows(nets.teacher, clips.frames, clips.num_local)
    values: dict[str, Tensor] = {}
    skipped = 0
    critic = None
    if nets.discriminator is not None:
        d = discriminator_step(nets.discriminator, clips, out, nets.dis_scaler, amp)
        ok = _finite(d["loss"], world)
        skipped += not ok
        norm = apply_update(nets.dis_optimizer, nets.dis_scaler, nets.discriminator, ok)
        nets.dis_schedule.step()
        values |= {
            f"loss/discriminator_{k}" if k != "loss" else "loss/discriminator": v
            for k, v in d.items()
        }
        values["grad_norm/discriminator"] = norm
        critic = unwrap(nets.discriminator)
    with frozen(critic) if critic is not None else contextlib.nullcontext():
        g = generator_step(critic, clips, out, teacher, params.loss, nets.gen_scaler, amp)
    ok = _finite(g["loss"], world)
    skipped += not ok
    values["grad_norm/generator"] = apply_update(
        nets.gen_optimizer, nets.gen_scaler, nets.generator, ok
    )
    nets.gen_schedule.step()
    values |= {f"loss/{k}" if k != "loss" else "loss/generator": v for k, v in g.items()}
    return StepResult(values, skipped)


def save(nets: Nets, paths: TrainPaths, step: int, meta: dict[str, Any], keep: int) -> Path | None:
    """Checkpoint (rank 0), refusing to write a model that holds NaN/Inf."""
    models = [unwrap(m) for m in (nets.generator, nets.discriminator) if m is not None]
    if not all(checkpoint.all_finite(m) for m in models):
        log.error("step %d: non-finite weights; checkpoint NOT written", step)
        return None
    state = {**state_dict(nets), "rng": checkpoint.rng_state(), "meta": meta}
    return checkpoint.save_checkpoint(paths.checkpoints, step, state, keep)


def resume(nets: Nets, paths: TrainPaths) -> tuple[int, dict[str, Any]]:
    """Load the newest checkpoint of this configuration: (its step, its meta), or (0, {})."""
    latest = checkpoint.latest_checkpoint(paths.checkpoints)
    if latest is None:
        return 0, {}
    state = checkpoint.load_checkpoint(latest)
    load_state_dict(nets, state)
    checkpoint.restore_rng_state(state["rng"])
    log.info("resuming from %s (iteration %d)", latest, state["step"])
    return state["step"], state.get("meta", {})


def rollback(nets: Nets, paths: TrainPaths, step: int) -> bool:
    """Restore weights and optimizers of the newest checkpoint; training goes on with new data."""
    latest = checkpoint.latest_checkpoint(paths.checkpoints)
    if latest is None:
        log.warning(
            "step %d: non-finite loss and no checkpoint to roll back to; step skipped", step
        )
        return False
    load_state_dict(nets, checkpoint.load_checkpoint(latest))
    log.warning("step %d: non-finite loss; rolled back to %s", step, latest.name)
    return True


def progress(start: int, total: int, world: World) -> tqdm:
    return tqdm(
        total=total,
        initial=start,
        desc="train",
        unit="it",
        disable=not world.is_main,
        dynamic_ncols=True,
    )
