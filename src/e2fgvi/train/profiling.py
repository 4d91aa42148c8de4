"""The profiling step of `e2fgvi profile`: one full training iteration on a fixed synthetic batch.

The batch is fixed and synthetic (frames in [-1, 1], real random masks) at the train size, so a
profiling window measures compute alone; SPyNet starts random, which costs the same as
pretrained weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from e2fgvi.config import Params
from e2fgvi.data.masks import random_mask_sequence
from e2fgvi.train import precision
from e2fgvi.train.distributed import World
from e2fgvi.train.nets import build_nets
from e2fgvi.train.steps import Clips, train_step

StepFn = Callable[[], Any]


def make_training_step(
    params: Params, device: torch.device, clips: int, world: World | None = None
) -> StepFn:
    """One full E2FGVI training step (G forward, D update, G update) on ``clips`` clips.

    ``world`` given (a joined process group), the networks are DDP-wrapped as in training.
    """
    cfg = params.train
    model = params.model.model_copy(update={"spynet_init": "random"})
    params = params.model_copy(update={"model": model})
    world = world or World(0, 0, 1, device)
    precision.apply_backend_switches(cfg, device)
    nets = build_nets(params, None, world)
    t = cfg.num_local_frames + cfg.num_ref_frames
    generator = torch.Generator().manual_seed(params.seed)
    frames = torch.rand(clips, t, 3, cfg.height, cfg.width, generator=generator) * 2 - 1
    rng = np.random.default_rng(params.seed)
    masks = np.stack(
        [random_mask_sequence(rng, t, cfg.height, cfg.width, params.masks) for _ in range(clips)]
    )
    batch = Clips(
        frames.to(device),
        torch.from_numpy(masks).unsqueeze(2).float().to(device),
        cfg.num_local_frames,
    )
    return lambda: train_step(nets, batch, params, world)
