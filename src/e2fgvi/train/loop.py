"""The training loop: ``train(params, paths) -> metrics``, built from small functions.

One iteration is ``e2fgvi.train.steps.train_step``; this module only feeds it batches, times it,
and hands its results to logging, sample strips and checkpoints. Rank 0 logs to MLflow, keeps
the loss history and writes checkpoints; rerunning resumes from the newest checkpoint of the
same configuration, and the losses after a resume equal those of an uninterrupted run.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from e2fgvi import tracking
from e2fgvi.config import Params
from e2fgvi.data.dataset import StepSampler, TrainClips
from e2fgvi.measure.flops import measure_step_flops
from e2fgvi.measure.meter import CostMeter, StepTiming
from e2fgvi.train import nets as netlib
from e2fgvi.train import precision, provenance, session
from e2fgvi.train.distributed import World, check_same_job, close_world, init_world, per_rank_batch
from e2fgvi.train.images import write_strip
from e2fgvi.train.session import TrainContext, TrainPaths
from e2fgvi.train.steps import Clips, StepResult
from e2fgvi.train.telemetry import Averager, log_training_data, start_system_metrics

log = logging.getLogger(__name__)


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


def train(params: Params, paths: TrainPaths) -> dict[str, Any] | None:
    """Run or resume the configured training; returns the final figures on rank 0."""
    world = init_world(params.train.device)
    try:
        check_same_job(provenance.job_identity(params), world)
        return _train(params, paths, world)
    finally:
        close_world(world)


def _start(params: Params, paths: TrainPaths, world: World) -> TrainContext:
    """Networks (resumed from the newest checkpoint), the session and the cost meter."""
    precision.apply_backend_switches(params.train, world.device)
    nets = netlib.build_nets(params, paths.spynet, world)
    start, meta = netlib.resume(nets, paths.folder(params))
    session.check_resume(params, paths, world, start, meta)
    meter = CostMeter(params.cost, world.device, per_rank_batch(params.train.batch_size, world))
    meter.set_conditions(**precision.speed_tags(params.train, world.device))
    state = session.open_session(params, paths, world, start, meta)  # last: it opens the run
    if world.is_main:
        log_training_data(state.run, paths.dvc_lock, paths.frames.parent, params.data)
    return TrainContext(params, world, nets, meter, state)


def _train(params: Params, paths: TrainPaths, world: World) -> dict[str, Any] | None:
    ctx = _start(params, paths, world)
    with session.ending_run(ctx.session):
        return _loop(ctx, paths)


def _loop(ctx: TrainContext, paths: TrainPaths) -> dict[str, Any] | None:
    params, world = ctx.params, ctx.world
    cfg, meter, start = params.train, ctx.meter, ctx.session.start
    batches = iter(make_loader(params, paths, world, start))
    averager = Averager()
    bar = tqdm(total=cfg.iterations, initial=start, desc="train", unit="it",
               disable=not world.is_main, dynamic_ncols=True)  # fmt: skip
    meter.start()
    system = start_system_metrics(ctx.session.run, params, world, resumed=start > 0)
    for step in range(start + 1, cfg.iterations + 1):
        with meter.data_wait():
            clips = _to_device(next(batches), ctx)
        with meter.compute():
            # The first step is a warm-up step anyway: counting its FLOPs costs no measurement.
            result = _counted_step(ctx, clips) if step == start + 1 else ctx.step(clips)
        timing = meter.end_step(step)
        averager.add(result.values)
        _guard(ctx, result, step)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.iterations:
            _log_step(ctx, step, averager.pop(), timing, bar)
        if world.is_main:
            _log_strips(ctx, step, clips, result)
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
            session.checkpoint(ctx, step)
    bar.close()
    if system is not None:
        system.stop()
    record = meter.gather(meter.stop())
    if not world.is_main:
        return None
    return session.finish(ctx, paths, record)


def _log_strips(ctx: TrainContext, step: int, clips: Clips, result: StepResult) -> None:
    """The sample strip every ``image_every`` steps (the UI's image grid), and at step 0.

    A fresh run's first output comes from the initial weights, so it is iteration 0's strip:
    MLflow's image card opens at step 0, and finds an image there.
    """
    shown = [0] if step == 1 else []
    if step % ctx.params.train.image_every == 0:
        shown.append(step)
    for at in shown:
        strip = ctx.session.folder / "samples" / f"step_{at:07d}.png"
        write_strip(strip, clips.frames, clips.masks, result.comp)
        ctx.session.run.log_image(strip, key=tracking.names.IMAGE_KEY, step=at)


def _to_device(batch: list[Tensor], ctx: TrainContext) -> Clips:
    frames, masks = (t.to(ctx.world.device, non_blocking=True) for t in batch)
    return Clips(frames, masks, ctx.params.train.num_local_frames)


def _counted_step(ctx: TrainContext, clips: Clips) -> StepResult:
    """A real training step under the FLOP counter (for MFU in the cost report)."""
    box: list[StepResult] = []
    ctx.meter.set_flops_per_step(measure_step_flops(lambda: box.append(ctx.step(clips))))
    return box[0]


def _guard(ctx: TrainContext, result: StepResult, step: int) -> None:
    """Count skipped updates; under ``rollback`` also restore the newest checkpoint."""
    if result.skipped:
        meta = ctx.session.meta
        meta["skipped_updates"] = meta.get("skipped_updates", 0) + result.skipped
        if ctx.params.train.on_nonfinite == "rollback":
            netlib.rollback(ctx.nets, ctx.session.folder, step)


def _log_step(
    ctx: TrainContext, step: int, means: dict[str, float], timing: StepTiming, bar: tqdm
) -> None:
    """Means since the last log (every rank computed them: one sync), logged by rank 0."""
    state, nets = ctx.session, ctx.nets
    if state.run is None:
        return
    cfg = ctx.params.train
    # A learning rate the schedule never changes within the run is a constant of the run (param
    # ``train.lr``); charted per step it is only a flat line (the sample's 1e-4 read as 0).
    if any(m <= cfg.iterations for m in cfg.milestones):
        means["lr/generator"] = nets.gen_optimizer.param_groups[0]["lr"]
        if nets.dis_optimizer is not None:
            means["lr/discriminator"] = nets.dis_optimizer.param_groups[0]["lr"]
    means["guard/skipped_updates"] = float(state.meta.get("skipped_updates", 0))
    means |= ctx.meter.metrics_for_step(timing)
    state.run.log_metrics(tracking.names.step_metrics(means), step=step)
    state.history.append(step, means)
    bar.set_postfix(loss=f"{means['loss/generator']:.3f}", refresh=False)
