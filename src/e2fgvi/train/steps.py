"""One training iteration in the official order: G forward, D update, G update.

Facts: docs/official-e2fgvi.md §4.

``train_step`` is the whole iteration: generator forward, discriminator update, generator update
against the just-updated discriminator, both LR schedules stepped. The loss functions only run
forwards; ``apply_update`` then back-propagates and steps only when the loss was finite on every
rank. Back-propagating a NaN is not merely useless: PyTorch's CPU backward kernels of
``grid_sample`` (border padding) and ``deform_conv2d`` crash the process on NaN sampling
coordinates, which is how a diverging flow branch (issue #38) would end a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from e2fgvi.config import LossParams, Params
from e2fgvi.train import losses, optim, precision
from e2fgvi.train import nets as netlib
from e2fgvi.train.distributed import World, any_rank


@dataclass
class Clips:
    """A batch of training clips: local frames first, then references."""

    frames: Tensor  # (b, t, 3, h, w) in [-1, 1]
    masks: Tensor  # (b, t, 1, h, w), 1 = hole
    num_local: int


@dataclass
class Forward:
    """The generator's outputs for one batch."""

    pred: Tensor  # (b, t, 3, h, w)
    comp: Tensor  # prediction inside the holes, ground truth outside
    flows: tuple[Tensor, Tensor]  # forward, backward: (b, l_t - 1, 2, h/4, w/4)


@dataclass
class StepResult:
    """Detached losses and norms of one iteration, plus how many updates the guard skipped."""

    values: dict[str, Tensor]
    comp: Tensor  # the composited clips, for sample strips
    skipped: int = 0


def generator_forward(generator: nn.Module, clips: Clips, autocast: Callable[[], Any]) -> Forward:
    """Inpaint the masked clips; the mask is not a network input (official-e2fgvi.md §2.3)."""
    b, t = clips.frames.shape[:2]
    masked = clips.frames * (1 - clips.masks)
    with autocast():
        pred, flows = generator(masked, clips.num_local)
    pred = pred.float().view(b, t, *pred.shape[1:])
    comp = masked + clips.masks * pred
    return Forward(pred, comp, (flows[0].float(), flows[1].float()))


def discriminator_step(
    discriminator: nn.Module,
    clips: Clips,
    out: Forward,
    autocast: Callable[[], Any],
) -> dict[str, Tensor]:
    """Hinge loss on real clips vs detached composites (``loss`` keeps its graph)."""
    with autocast():
        real = discriminator(clips.frames)
        fake = discriminator(out.comp.detach())
    terms = losses.discriminator_hinge_terms(real.float(), fake.float())
    return {"loss": terms["total"], "real": terms["real"].detach(), "fake": terms["fake"].detach()}


def generator_step(
    discriminator: nn.Module | None,
    clips: Clips,
    out: Forward,
    teacher_flows: tuple[Tensor, Tensor],
    weights: LossParams,
    autocast: Callable[[], Any],
) -> dict[str, Tensor]:
    """Weighted sum of hole, valid, flow and (with D, just updated) adversarial losses."""
    fake = None
    if discriminator is not None:
        with autocast():
            fake = discriminator(out.comp).float()
    terms = losses.generator_loss_terms(
        out.pred, clips.frames, clips.masks, out.flows, teacher_flows, fake, weights
    )
    total = terms.pop("total")
    return {"loss": total, **{k: v.detach() for k, v in terms.items()}}


def grad_norm(module: nn.Module) -> Tensor:
    """Total L2 norm of the gradients (a tensor: no host sync until it is logged)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def apply_update(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    module: nn.Module,
    loss: Tensor,
    finite: bool,
) -> Tensor:
    """Back-propagate and step when ``finite``, else skip both; returns the gradient norm."""
    if finite:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norm = grad_norm(module)
        scaler.step(optimizer)
        scaler.update()
    else:
        norm = torch.full((), float("nan"))
        if scaler.is_enabled():
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
    optimizer.zero_grad(set_to_none=True)
    return norm


def _finite(loss: Tensor, world: World) -> bool:
    """One host sync per update: is the loss finite on every rank?"""
    return not any_rank(not bool(torch.isfinite(loss)), world)


def _update(
    terms: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    module: torch.nn.Module,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    world: World,
) -> tuple[Tensor, bool]:
    """Guarded update of one network, then its schedule (which counts iterations, not updates).

    Returns the gradient norm and whether the update happened; ``terms["loss"]`` is detached.
    """
    ok = _finite(terms["loss"], world)
    norm = apply_update(optimizer, scaler, module, terms["loss"], ok)
    terms["loss"] = terms["loss"].detach()
    optim.step_schedule(schedule)
    return norm, ok


def train_step(nets: netlib.Nets, clips: Clips, params: Params, world: World) -> StepResult:
    """One official iteration: G forward, D update, G update with the updated D, schedules."""
    amp = precision.autocast(params.train, world.device)
    out = generator_forward(nets.generator, clips, amp)
    teacher = (torch.zeros_like(out.flows[0]), torch.zeros_like(out.flows[1]))
    if nets.teacher is not None:
        teacher = losses.teacher_flows(nets.teacher, clips.frames, clips.num_local)
    values: dict[str, Tensor] = {}
    skipped, critic = 0, None
    if nets.discriminator is not None:
        d = discriminator_step(nets.discriminator, clips, out, amp)
        values["grad_norm/discriminator"], ok = _update(
            d, nets.dis_optimizer, nets.dis_scaler, nets.discriminator, nets.dis_schedule, world
        )
        skipped += not ok
        values |= {f"loss/discriminator_{k}": v for k, v in d.items() if k != "loss"}
        values["loss/discriminator"] = d["loss"]
        critic = netlib.unwrap(nets.discriminator)
    with netlib.frozen(critic) if critic is not None else contextlib.nullcontext():
        g = generator_step(critic, clips, out, teacher, params.loss, amp)
        values["grad_norm/generator"], ok = _update(
            g, nets.gen_optimizer, nets.gen_scaler, nets.generator, nets.gen_schedule, world
        )
    skipped += not ok
    values |= {f"loss/{k}": v for k, v in g.items() if k != "loss"}
    values["loss/generator"] = g["loss"]
    return StepResult(values, out.comp.detach(), skipped)
