"""A microsecond stand-in for E2FGVI's networks, data and step, for long-run tests of the loop.

``swap_in()`` replaces three module attributes in THIS process only: ``nets.build_nets`` (tiny
linear generator and discriminator, the real optimizers, schedules and scalers),
``session.train_step`` (a deterministic no-autograd update of each from the batch) and
``loop.make_loader`` (a batch per iteration from a generator seeded by the iteration, so a
resumed run sees the same batches). Everything else is the real code: the loop, the cost meter,
MLflow tracking, sample strips, checkpoints (save, keep 3, resume), the history. It lives under
benchmarks/ and is imported by benchmarks and tests only; no user path imports it.

Run a stand-in training: PYTHONPATH=src python benchmarks/standin.py PARAMS.yaml RUN_FOLDER
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml
from torch import nn

from e2fgvi.config import Params, load_params
from e2fgvi.train import loop, optim, precision, session
from e2fgvi.train import nets as netlib
from e2fgvi.train.distributed import World
from e2fgvi.train.session import TrainPaths
from e2fgvi.train.steps import Clips, StepResult

# The batch's shape: (batch, frames, 3, h, w); tiny, so a sample strip is a few hundred bytes.
CLIP_HW = 4
# Seconds each stand-in step sleeps: tests slow a short run down so that a kill lands inside it.
STEP_SLEEP_S = float(os.environ.get("STANDIN_STEP_S", "0"))


def build_nets(params: Params, spynet: Path | None, world: World) -> netlib.Nets:
    """Tiny seeded networks with the real optimizers, schedules and scalers."""
    cfg = params.train
    torch.manual_seed(params.seed)
    generator, discriminator = nn.Linear(4, 4), nn.Linear(4, 1)
    gen_optimizer = optim.generator_optimizer(generator, cfg)
    dis_optimizer = optim.discriminator_optimizer(discriminator, cfg)
    return netlib.Nets(
        generator=generator,
        discriminator=discriminator,
        teacher=None,
        gen_optimizer=gen_optimizer,
        dis_optimizer=dis_optimizer,
        gen_schedule=optim.schedule(gen_optimizer, cfg),
        dis_schedule=optim.schedule(dis_optimizer, cfg),
        gen_scaler=precision.grad_scaler(cfg, world.device),
        dis_scaler=precision.grad_scaler(cfg, world.device),
    )


def train_step(nets: netlib.Nets, clips: Clips, params: Params, world: World) -> StepResult:
    """A deterministic update of each stand-in's weights (no autograd); losses from both."""
    if marker := os.environ.pop("STANDIN_FIRST_STEP", ""):  # when the first iteration began
        Path(marker).write_text(repr(time.time()))
    if STEP_SLEEP_S:
        time.sleep(STEP_SLEEP_S)
    x = clips.frames.flatten()[:4]
    with torch.no_grad():
        g = (nets.generator.weight.sum(0) - x).square().mean()
        d = (nets.discriminator.weight.sum() * x.mean()).square()
        nets.generator.weight.mul_(0.999).add_(x, alpha=1e-3)
        nets.discriminator.weight.mul_(0.999).add_(d, alpha=1e-3)
    optim.step_schedule(nets.gen_schedule)
    optim.step_schedule(nets.dis_schedule)
    values = {"loss/generator": g, "loss/hole": g * 0.5, "loss/valid": g * 0.25,
              "loss/flow": g * 0.0, "loss/discriminator": d}  # fmt: skip
    return StepResult(values, comp=clips.frames)


def make_loader(params: Params, paths: TrainPaths, world: World, start: int) -> Iterator:
    """Batches of iterations ``start + 1`` ... from a generator seeded by the iteration."""
    cfg = params.train
    frames = cfg.num_local_frames + cfg.num_ref_frames
    for step in range(start + 1, cfg.iterations + 1):
        rng = torch.Generator().manual_seed(step)
        clip = torch.rand(1, frames, 3, CLIP_HW, CLIP_HW, generator=rng) * 2 - 1
        yield [clip, (torch.rand(1, frames, 1, CLIP_HW, CLIP_HW, generator=rng) > 0.5).float()]


def swap_in() -> None:
    """Replace the networks, the step and the loader by the stand-ins (this process only)."""
    netlib.build_nets = build_nets
    session.train_step = train_step
    loop.make_loader = make_loader


def stand_in_params(base: Path, iterations: int, overrides: dict | None = None) -> Params:
    """``base``'s plan on this CPU in one process, for ``iterations``; its cadence unchanged."""
    raw = yaml.safe_load(base.read_text())
    raw["train"] |= {"iterations": iterations, "device": "cpu", "num_workers": 0,
                     "nproc_per_node": 1, "nnodes": 1, "compile": False}  # fmt: skip
    for section, values in (overrides or {}).items():
        raw[section] |= values
    tmp = base.parent / f".{base.stem}.standin.yaml"
    return _load_written(tmp, raw)


def _load_written(path: Path, raw: dict) -> Params:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        return load_params(path)
    finally:
        path.unlink()


def run(params_file: Path, folder: Path) -> None:
    """Train with the stand-ins under ``folder`` (checkpoints, run records, MLflow store)."""
    swap_in()
    params = load_params(params_file)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    loop.train(params, TrainPaths.under(data, folder / "run", folder / "mlruns"))


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
