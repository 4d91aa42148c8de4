"""Optimizers and LR schedules of the official recipe (docs/official-e2fgvi.md §1.1, §1.4).

Adam with betas (0, 0.99) for G and D; G has a second parameter group for its SPyNet
(``update_spynet.*``) at ``lr * spynet_lr``. MultiStepLR is stepped once per iteration, so the
LR is ``lr`` up to the milestone (400k) and ``lr * gamma`` after it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from e2fgvi.config import TrainParams

_SPYNET_PREFIX = "update_spynet."


def generator_optimizer(generator: nn.Module, cfg: TrainParams) -> torch.optim.Adam:
    named = list(generator.named_parameters())
    spynet = [p for n, p in named if n.startswith(_SPYNET_PREFIX)]
    rest = [p for n, p in named if not n.startswith(_SPYNET_PREFIX)]
    groups = [{"params": rest, "lr": cfg.lr}]
    if spynet:
        groups.append({"params": spynet, "lr": cfg.lr * cfg.spynet_lr})
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def discriminator_optimizer(discriminator: nn.Module, cfg: TrainParams) -> torch.optim.Adam:
    return torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))


def schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainParams
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-iteration step decay at ``milestones`` by ``gamma``."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=cfg.milestones, gamma=cfg.gamma
    )


def step_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Advance one iteration, also when the guard skipped the optimizer step.

    The schedule counts iterations, not updates; PyTorch's warning about stepping before
    ``optimizer.step()`` is about a different convention and is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        scheduler.step()
