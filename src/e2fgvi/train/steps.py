"""One training iteration in the official order (reference §4): G forward, D update, G update.

The loss functions only run forwards; ``apply_update`` then back-propagates and steps only when
the loss was finite on every rank. Back-propagating a NaN is not merely useless: PyTorch's CPU
backward kernels of ``grid_sample`` (border padding) and ``deform_conv2d`` crash the process on
NaN sampling coordinates, which is how a diverging flow branch (issue #38) would end a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from e2fgvi.config import LossParams
from e2fgvi.train import losses


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


def generator_forward(generator: nn.Module, clips: Clips, autocast: Callable[[], Any]) -> Forward:
    """Inpaint the masked clips; the mask itself is not a network input (reference §2.3)."""
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
    d_real = torch.relu(1 - real.float()).mean()
    d_fake = torch.relu(1 + fake.float()).mean()
    loss = losses.discriminator_hinge_loss(real.float(), fake.float())
    return {"loss": loss, "real": d_real.detach(), "fake": d_fake.detach()}


def generator_step(
    discriminator: nn.Module | None,
    clips: Clips,
    out: Forward,
    teacher_flows: tuple[Tensor, Tensor],
    weights: LossParams,
    autocast: Callable[[], Any],
) -> dict[str, Tensor]:
    """Weighted sum of hole, valid, flow and (with D, just updated) adversarial losses."""
    terms = {
        "hole": weights.hole_weight * losses.hole_loss(out.pred, clips.frames, clips.masks),
        "valid": weights.valid_weight * losses.valid_loss(out.pred, clips.frames, clips.masks),
        "flow": weights.flow_weight * losses.flow_loss(out.flows, teacher_flows),
    }
    if discriminator is not None:
        with autocast():
            fake = discriminator(out.comp)
        adversarial = losses.generator_adversarial_loss(fake.float())
        terms["adversarial"] = weights.adversarial_weight * adversarial
    total = torch.stack(list(terms.values())).sum()
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
