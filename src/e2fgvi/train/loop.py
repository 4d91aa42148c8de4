"""The training loop: ``train(params, paths) -> metrics``, built from small functions.

Per iteration (reference §4): generator forward, discriminator update, generator update (against
the just-updated discriminator), both LR schedules stepped. Rank 0 logs to MLflow, keeps the loss
history and writes checkpoints; rerunning resumes from the newest checkpoint of the same
configuration, and the losses after a resume equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from e2fgvi.config import Params
from e2fgvi.cost.flops import measure_step_flops
from e2fgvi.cost.meter import CostMeter
from e2fgvi.data.dataset import StepSampler, TrainClips
from e2fgvi.train import losses, optim, precision, session
from e2fgvi.train import nets as netlib
from e2fgvi.train.distributed import (
    World,
    any_rank,
    close_world,
    init_world,
    per_rank_batch,
)
from e2fgvi.train.images import write_strip
from e2fgvi.train.session import TrainPaths
from e2fgvi.train.steps import (
    Clips,
    apply_update,
    discriminator_step,
    generator_forward,
    generator_step,
)
from e2fgvi.train.telemetry import Averager

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """Detached losses and norms of one iteration, plus how many updates the guard skipped."""

    values: dict[str, Tensor]
    comp: Tensor  # the composited clips, for sample strips
    skipped: int = 0


def make_loader(params: Params, paths: TrainPaths, world: World, start: int) -> DataLoader:
    """Batches for this rank from iteration ``start`` on (indices are global: exact resume)."""
    cfg = params.train
    dataset = TrainClips(paths.frames, paths.index, cfg, params.masks, params.seed)
    sampler = StepSampler(start, cfg.iterations, cfg.batch_size, world.rank, world.size)
    return DataLoader(
        dataset,
        batch_size=per_rank_batch(cfg.batch_size, world),
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=world.device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )


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


def _counted_step(
    nets: netlib.Nets, clips: Clips, params: Params, world: World, meter: CostMeter
) -> StepResult:
    """A real training step under the FLOP counter (for MFU in the cost report)."""
    box: list[StepResult] = []
    meter.set_flops_per_step(
        measure_step_flops(lambda: box.append(train_step(nets, clips, params, world)))
    )
    return box[0]


def _to_device(batch: list[Tensor], params: Params, world: World) -> Clips:
    frames, masks = (t.to(world.device, non_blocking=True) for t in batch)
    return Clips(frames, masks, params.train.num_local_frames)


def train(params: Params, paths: TrainPaths) -> dict[str, Any] | None:
    """Run or resume the configured training; returns the final figures on rank 0."""
    world = init_world(params.train.device)
    try:
        return _train(params, paths, world)
    finally:
        close_world(world)


def _train(params: Params, paths: TrainPaths, world: World) -> dict[str, Any] | None:
    cfg = params.train
    precision.apply_backend_switches(cfg, world.device)
    nets = netlib.build_nets(params, paths.spynet, world)
    start, meta = netlib.resume(nets, paths.folder(params))
    session.check_resume(params, paths, world, start, meta)
    state = session.open_session(params, paths, world, start, meta)
    meter = CostMeter(params.cost, world.device, per_rank_batch(cfg.batch_size, world))
    meter.set_conditions(**precision.speed_tags(cfg, world.device))
    batches = iter(make_loader(params, paths, world, start))
    averager = Averager()
    bar = tqdm(total=cfg.iterations, initial=start, desc="train", unit="it",
               disable=not world.is_main, dynamic_ncols=True)  # fmt: skip
    meter.start()
    for step in range(start + 1, cfg.iterations + 1):
        with meter.data_wait():
            clips = _to_device(next(batches), params, world)
        with meter.compute():
            if step == start + 1:  # a warm-up step: counting FLOPs slows it down
                result = _counted_step(nets, clips, params, world, meter)
            else:
                result = train_step(nets, clips, params, world)
        timing = meter.end_step(step)
        if not timing.warmup:
            state.step_times.append(timing.total_s)
        averager.add(result.values)
        _guard(nets, params, state, result, step)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.iterations:
            _log_step(nets, params, state, step, averager.pop(), meter, timing, bar)
        if world.is_main and step % cfg.image_every == 0:
            strip = state.folder / "samples" / f"step_{step:07d}.png"
            write_strip(strip, clips.frames, clips.masks, result.comp)
            state.run.log_artifact(strip, "samples")
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
            session.checkpoint(nets, params, state, step, world, meter)
    bar.close()
    record = meter.gather(meter.stop())
    if not world.is_main:
        return None
    return session.finish(nets, params, paths, state, record)


def _guard(
    nets: netlib.Nets, params: Params, state: session.Session, result: StepResult, step: int
) -> None:
    """Count skipped updates; under ``rollback`` also restore the newest checkpoint."""
    if result.skipped:
        state.meta["skipped_updates"] = state.meta.get("skipped_updates", 0) + result.skipped
        if params.train.on_nonfinite == "rollback":
            netlib.rollback(nets, state.folder, step)


def _log_step(
    nets: netlib.Nets,
    params: Params,
    state: session.Session,
    step: int,
    means: dict[str, float],
    meter: CostMeter,
    timing: Any,
    bar: tqdm,
) -> None:
    """Means since the last log (every rank computed them: one sync), logged by rank 0."""
    if state.run is None:
        return
    means["lr/generator"] = nets.gen_optimizer.param_groups[0]["lr"]
    if nets.dis_optimizer is not None:
        means["lr/discriminator"] = nets.dis_optimizer.param_groups[0]["lr"]
    means["perf/clips_per_s"] = params.train.batch_size / max(timing.total_s, 1e-9)
    means["guard/skipped_updates"] = float(state.meta.get("skipped_updates", 0))
    means |= meter.metrics_for_step(timing)
    state.run.log_metrics(means, step=step)
    state.history.append(step, means)
    bar.set_postfix(loss=f"{means['loss/generator']:.3f}", refresh=False)
