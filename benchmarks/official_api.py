"""The official E2FGVI code (a checkout the user supplies), driven the way its trainer drives it.

Import this module only in a worker process: ``load`` puts the mmcv stand-in and the checkout on
``sys.path``. Nothing of the official code is copied here; ``Trainer.step`` calls the official
networks and losses in the order of the official ``core/trainer.py`` training loop (G forward,
flow loss, D update, adversarial + hole + valid losses, G update, both LR schedules).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
SHIM = HERE / "mmcv_shim"
MODULES = {"e2fgvi": "model.e2fgvi", "e2fgvi_hq": "model.e2fgvi_hq"}


def load(official: Path) -> None:
    """Make ``model.*`` and ``core.*`` of the checkout importable (with the mmcv stand-in)."""
    if not (official / "model" / "e2fgvi.py").is_file():
        raise SystemExit(f"{official}: not an E2FGVI checkout (model/e2fgvi.py missing)")
    os.environ.setdefault("MPLBACKEND", "Agg")  # core/utils.py imports pyplot
    # The official ``model`` folder has no __init__.py: benchmarks/model.py would shadow it.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    for path in (str(official), str(SHIM)):
        if path not in sys.path:
            sys.path.insert(0, path)
    _restore_tostring_rgb()


def _restore_tostring_rgb() -> None:
    """Matplotlib 3.10 removed ``FigureCanvasAgg.tostring_rgb``, which the official mask code
    calls; put back the same bytes (the RGB planes of the canvas buffer)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not hasattr(FigureCanvasAgg, "tostring_rgb"):
        FigureCanvasAgg.tostring_rgb = lambda self: np.asarray(self.buffer_rgba())[
            ..., :3
        ].tobytes()


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


@dataclass
class Trainer:
    """The official networks, losses and optimizers of one training process."""

    generator: nn.Module
    discriminator: nn.Module
    flow_loss: nn.Module
    adversarial: Any
    gen_optimizer: torch.optim.Optimizer
    dis_optimizer: torch.optim.Optimizer
    schedules: list[Any]
    num_local: int
    weights: dict[str, float]

    def step(self, frames: Tensor, masks: Tensor) -> dict[str, float]:
        """One iteration in the official loop's order; losses as floats (as it logs them)."""
        b, _t, c, h, w = frames.shape
        l_t = self.num_local
        masked = frames * (1 - masks).float()
        pred, pred_flows = self.generator(masked, l_t)
        pred = pred.view(b, -1, c, h, w)
        comp = frames * (1.0 - masks) + masks * pred
        flow = self.flow_loss(pred_flows, (frames[:, :l_t] + 1) / 2)

        real_logits = self.discriminator(frames)
        fake_logits = self.discriminator(comp.detach())
        d_real = self.adversarial(real_logits, True, True)
        d_fake = self.adversarial(fake_logits, False, True)
        d_loss = (d_real + d_fake) / 2
        self.dis_optimizer.zero_grad()
        d_loss.backward()
        self.dis_optimizer.step()

        gan = self.adversarial(self.discriminator(comp), True, False) * self.weights["adv"]
        flow = flow * self.weights["flow"]
        hole = nn.functional.l1_loss(pred * masks, frames * masks) / torch.mean(masks)
        valid = nn.functional.l1_loss(pred * (1 - masks), frames * (1 - masks))
        valid = valid / torch.mean(1 - masks)
        g_loss = gan + flow + hole * self.weights["hole"] + valid * self.weights["valid"]
        self.gen_optimizer.zero_grad()
        g_loss.backward()
        self.gen_optimizer.step()
        for schedule in self.schedules:
            schedule.step()
        return {
            "loss/discriminator": d_loss.item(),
            "loss/discriminator_real": d_real.item(),
            "loss/discriminator_fake": d_fake.item(),
            "loss/adversarial": gan.item(),
            "loss/flow": flow.item(),
            "loss/hole": hole.item(),
            "loss/valid": valid.item(),
            "loss/generator": g_loss.item(),
        }

    def forward(self, masked: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return self.generator(masked, self.num_local)

    def load(self, state: dict[str, dict[str, Tensor]]) -> None:
        """Our state dicts load strictly: the parameter layouts are the same."""
        self.generator.load_state_dict(state["generator"], strict=True)
        self.discriminator.load_state_dict(state["discriminator"], strict=True)
        self.flow_loss.fix_spynet.load_state_dict(state["teacher"], strict=True)


def _adam_groups(generator: nn.Module, lr: float, spynet_lr: float) -> list[dict[str, Any]]:
    """The official two groups: everything but ``update_spynet``, then ``update_spynet``."""
    named = list(generator.named_parameters())
    spynet = [p for n, p in named if "update_spynet" in n]
    rest = [p for n, p in named if "update_spynet" not in n]
    return [{"params": rest, "lr": lr}, {"params": spynet, "lr": lr * spynet_lr}]


def build_trainer(variant: str, num_local: int, device: str) -> Trainer:
    """The official configuration (configs/train_e2fgvi*.json) on ``device``, batch 1."""
    net = _module(MODULES[variant])
    loss = _module("core.loss")
    flow_comp = _module("model.modules.flow_comp")
    schedulers = _module("core.lr_scheduler")
    generator = net.InpaintGenerator().to(device)
    discriminator = net.Discriminator(in_channels=3, use_sigmoid=False).to(device)
    lr, betas = 1e-4, (0.0, 0.99)
    gen_optimizer = torch.optim.Adam(_adam_groups(generator, lr, 1.0), betas=betas)
    dis_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    schedules = [
        schedulers.MultiStepRestartLR(opt, milestones=[400_000], gamma=0.1)
        for opt in (gen_optimizer, dis_optimizer)
    ]
    return Trainer(
        generator=generator,
        discriminator=discriminator,
        flow_loss=flow_comp.FlowCompletionLoss().to(device),
        adversarial=loss.AdversarialLoss(type="hinge").to(device),
        gen_optimizer=gen_optimizer,
        dis_optimizer=dis_optimizer,
        schedules=schedules,
        num_local=num_local,
        weights={"hole": 1.0, "valid": 1.0, "flow": 1.0, "adv": 0.01},
    )


def train_dataset(data_root: Path, name: str, width: int, height: int, local: int, ref: int):
    """The official ``core.dataset.TrainDataset`` over ``data_root/name/JPEGImages/*.zip``."""
    dataset = _module("core.dataset")
    args = {
        "data_root": str(data_root),
        "name": name,
        "w": width,
        "h": height,
        "num_local_frames": local,
        "num_ref_frames": ref,
    }
    return dataset.TrainDataset(args)


def mask_video(length: int, width: int, height: int) -> list[Any]:
    """The official training mask video (a list of PIL images)."""
    utils = _module("core.utils")
    return utils.create_random_shape_with_random_motion(
        length, imageHeight=height, imageWidth=width
    )
