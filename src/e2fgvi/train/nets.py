"""Everything that changes as training runs: networks, optimizers, schedules, scalers.

``build_nets`` assembles them (seeded, on the device, DDP-wrapped under torchrun);
``state_dict`` / ``load_state_dict`` move them in and out of checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from e2fgvi.config import Params
from e2fgvi.errors import UserError
from e2fgvi.model import Discriminator, build_flow_teacher, build_generator
from e2fgvi.model.checkpoint import describe_mismatch, stored_variant
from e2fgvi.train import checkpoint, optim, precision
from e2fgvi.train.distributed import World

log = logging.getLogger(__name__)


@dataclass
class Nets:
    generator: nn.Module
    discriminator: nn.Module | None
    teacher: nn.Module | None
    gen_optimizer: torch.optim.Optimizer
    dis_optimizer: torch.optim.Optimizer | None
    gen_schedule: torch.optim.lr_scheduler.LRScheduler
    dis_schedule: torch.optim.lr_scheduler.LRScheduler | None
    gen_scaler: torch.amp.GradScaler
    dis_scaler: torch.amp.GradScaler


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers."""
    while isinstance(module, DistributedDataParallel) or hasattr(module, "_orig_mod"):
        module = module.module if isinstance(module, DistributedDataParallel) else module._orig_mod
    return module


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` without accumulating gradients into its parameters."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _place(module: nn.Module, params: Params, world: World) -> nn.Module:
    module = precision.prepare_module(module, params.train, world.device)
    module = precision.maybe_compile(module, params.train)
    if world.distributed:
        ids = [world.device.index] if world.device.type == "cuda" else None
        module = DistributedDataParallel(module, device_ids=ids)
    return module


def build_nets(params: Params, spynet: Path | None, world: World) -> Nets:
    """Seeded construction of the official training set-up (docs/official-e2fgvi.md §1.4, §3.8)."""
    cfg = params.train
    torch.manual_seed(params.seed)
    generator = _place(build_generator(params.model, spynet), params, world)
    discriminator = teacher = dis_optimizer = dis_schedule = None
    if cfg.use_discriminator:
        discriminator = _place(Discriminator(), params, world)
        dis_optimizer = optim.discriminator_optimizer(discriminator, cfg)
        dis_schedule = optim.schedule(dis_optimizer, cfg)
    if params.loss.flow_weight > 0:
        teacher = build_flow_teacher(params.model, spynet).to(world.device)
    gen_optimizer = optim.generator_optimizer(unwrap(generator), cfg)
    return Nets(
        generator=generator,
        discriminator=discriminator,
        teacher=teacher,
        gen_optimizer=gen_optimizer,
        dis_optimizer=dis_optimizer,
        gen_schedule=optim.schedule(gen_optimizer, cfg),
        dis_schedule=dis_schedule,
        gen_scaler=precision.grad_scaler(cfg, world.device),
        dis_scaler=precision.grad_scaler(cfg, world.device),
    )


_PARTS = (
    "generator",
    "discriminator",
    "gen_optimizer",
    "dis_optimizer",
    "gen_schedule",
    "dis_schedule",
    "gen_scaler",
    "dis_scaler",
)


def state_dict(nets: Nets) -> dict[str, Any]:
    """Checkpointable state of every part (models unwrapped: no ``module.`` prefixes)."""
    state = {}
    for name in _PARTS:
        part = getattr(nets, name)
        if part is not None:
            state[name] = (unwrap(part) if isinstance(part, nn.Module) else part).state_dict()
    return state


def load_state_dict(nets: Nets, state: dict[str, Any]) -> None:
    for name in _PARTS:
        part = getattr(nets, name)
        if part is not None and name in state:
            target = unwrap(part) if isinstance(part, nn.Module) else part
            target.load_state_dict(state[name])


def _fitting(nets: Nets, state: dict[str, Any], path: Path) -> None:
    """Load checkpoint ``state``; one that does not fit these networks is one line."""
    fix = f"move it out of {path.parent} to train afresh"
    current = stored_variant(unwrap(nets.generator).state_dict())
    found = stored_variant(state.get("generator"))
    if found is not None and found != current:
        raise UserError(
            f"{path}: a checkpoint of model.variant {found}, but this configuration trains "
            f"{current}; {fix}, or set model.variant: {found} to continue it"
        )
    for name in ("generator", "discriminator"):
        module, saved = getattr(nets, name), state.get(name)
        if module is None or saved is None:
            continue
        expected = {k: v.shape for k, v in unwrap(module).state_dict().items()}
        mismatch = (
            describe_mismatch(saved, expected) if isinstance(saved, Mapping) else "not a state_dict"
        )
        if mismatch:
            raise UserError(
                f"{path}: its {name} does not fit this configuration ({mismatch}); {fix}"
            )
    try:
        load_state_dict(nets, state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(
            f"{path}: cannot be resumed by this configuration ({reason}); {fix}"
        ) from None


def save(nets: Nets, folder: Path, step: int, meta: dict[str, Any], keep: int) -> Path | None:
    """Checkpoint ``step`` (rank 0), refusing to write weights that hold NaN/Inf."""
    models = [unwrap(m) for m in (nets.generator, nets.discriminator) if m is not None]
    if not all(checkpoint.all_finite(m) for m in models):
        log.error("iteration %d: non-finite weights; checkpoint NOT written", step)
        return None
    state = {**state_dict(nets), "rng": checkpoint.rng_state(), "meta": meta}
    return checkpoint.save_checkpoint(folder, step, state, keep)


def resume(nets: Nets, folder: Path) -> tuple[int, dict[str, Any]]:
    """Load the newest checkpoint in ``folder``: (its iteration, its meta), or (0, {})."""
    latest = checkpoint.latest_checkpoint(folder)
    if latest is None:
        return 0, {}
    state = checkpoint.load_checkpoint(latest)
    _fitting(nets, state, latest)
    checkpoint.restore_rng_state(state["rng"])
    log.info("resuming from %s (iteration %d)", latest, state["step"])
    return state["step"], state.get("meta", {})


def rollback(nets: Nets, folder: Path, step: int) -> bool:
    """Restore the newest checkpoint's weights and optimizers; training goes on with new data."""
    latest = checkpoint.latest_checkpoint(folder)
    if latest is None:
        log.warning("iteration %d: non-finite loss, no checkpoint to roll back to: skipped", step)
        return False
    state = checkpoint.load_checkpoint(latest)
    _fitting(nets, state, latest)
    # The schedules count iterations, and iteration ``step`` has already stepped them: bring the
    # restored ones forward again, or every later milestone would arrive late by the rollback.
    schedules = [s for s in (nets.gen_schedule, nets.dis_schedule) if s is not None]
    for _ in range(step - state["step"]):
        for schedule in schedules:
            optim.step_schedule(schedule)
    log.warning("iteration %d: non-finite loss; rolled back to %s", step, latest.name)
    return True
