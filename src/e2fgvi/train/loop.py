"""The training loop: ``train(params, paths) -> metrics``, built from small functions.

Per iteration (reference §4): generator forward, discriminator update, generator update (against
the just-updated discriminator), both LR schedules stepped. Rank 0 logs to MLflow, keeps the loss
history and writes checkpoints; rerunning resumes from the newest checkpoint of the same
configuration, and the losses after a resume equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from e2fgvi.atomic import atomic_open, write_json
from e2fgvi.config import Params, params_hash
from e2fgvi.cost.flops import measure_step_flops
from e2fgvi.cost.meter import CostMeter
from e2fgvi.data.dataset import StepSampler, TrainClips
from e2fgvi.train import losses, optim, precision, provenance
from e2fgvi.train import nets as netlib
from e2fgvi.train.distributed import (
    World,
    any_rank,
    barrier,
    close_world,
    init_world,
    per_rank_batch,
)
from e2fgvi.train.images import write_strip
from e2fgvi.train.steps import (
    Clips,
    apply_update,
    discriminator_step,
    generator_forward,
    generator_step,
)
from e2fgvi.train.telemetry import Averager, History, log_checkpoint, open_run, run_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPaths:
    """Where training reads and writes (given by dvc.yaml through the stage's arguments)."""

    frames: Path  # data/youtube-vos/JPEGImages
    index: Path  # data/youtube-vos/train.json
    spynet: Path | None  # pretrained SPyNet file (None: random init)
    run_dir: Path  # data/run
    mlruns: Path  # MLflow store

    def checkpoints(self, params: Params) -> Path:
        """One folder per training configuration, so a changed config never resumes another."""
        return self.run_dir / "checkpoints" / provenance.resume_key(params)


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
        ok = _finite(d["loss"], world)
        skipped += not ok
        values["grad_norm/discriminator"] = apply_update(
            nets.dis_optimizer, nets.dis_scaler, nets.discriminator, d["loss"], ok
        )
        d["loss"] = d["loss"].detach()
        optim.step_schedule(nets.dis_schedule)
        values |= {f"loss/discriminator_{k}": v for k, v in d.items() if k != "loss"}
        values["loss/discriminator"] = d["loss"]
        critic = netlib.unwrap(nets.discriminator)
    with netlib.frozen(critic) if critic is not None else contextlib.nullcontext():
        g = generator_step(critic, clips, out, teacher, params.loss, amp)
        ok = _finite(g["loss"], world)
        skipped += not ok
        values["grad_norm/generator"] = apply_update(
            nets.gen_optimizer, nets.gen_scaler, nets.generator, g["loss"], ok
        )
    g["loss"] = g["loss"].detach()
    optim.step_schedule(nets.gen_schedule)
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


def _write_generator(nets: netlib.Nets, path: Path) -> None:
    """The final generator as a plain state_dict, the same format as the official release."""
    with atomic_open(path, "wb") as handle:
        torch.save(netlib.unwrap(nets.generator).state_dict(), handle)


@dataclass
class _Session:
    """Rank-0 reporting of one training session (None fields on other ranks)."""

    run: Any
    history: History | None
    meta: dict[str, Any]


def _open_session(
    params: Params, paths: TrainPaths, world: World, start: int, meta: dict
) -> _Session:
    if not world.is_main:
        return _Session(None, None, meta)
    folder = paths.checkpoints(params)
    tags = {
        **provenance.environment_tags(world.device, world.size),
        **precision.speed_tags(params.train, world.device),
        "resume_key": provenance.resume_key(params),
        "params_hash": params_hash(params),
    }
    run = open_run(
        params, paths.mlruns, paths.run_dir / "mlflow_spool.jsonl", meta.get("run_id"), tags
    )
    if start:
        run.set_tags({"resumed_from": start})
    meta = {
        **meta,
        "resume_key": tags["resume_key"],
        "params_hash": tags["params_hash"],
        "git_commit": tags["git.commit"],
    }
    return _Session(run, History(folder / "history.csv", start), meta)


def _checkpoint(
    nets: netlib.Nets, params: Params, paths: TrainPaths, session: _Session, step: int, world: World
) -> None:
    if world.is_main:
        session.meta["run_id"] = session.run.run_id
        path = netlib.save(
            nets, paths.checkpoints(params), step, session.meta, params.train.keep_checkpoints
        )
        if path is not None:
            log_checkpoint(session.run, path, params.tracking.log_checkpoints)
    barrier(world)


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
    folder = paths.checkpoints(params)
    start, meta = netlib.resume(nets, folder)
    session = _open_session(params, paths, world, start, meta)
    meter = CostMeter(params.cost, world.device, per_rank_batch(cfg.batch_size, world))
    meter.set_conditions(**precision.speed_tags(cfg, world.device))
    batches = iter(make_loader(params, paths, world, start))
    averager, step_times = Averager(), []
    skipped = session.meta.get("skipped_updates", 0)
    bar = tqdm(
        total=cfg.iterations,
        initial=start,
        desc="train",
        unit="it",
        disable=not world.is_main,
        dynamic_ncols=True,
    )
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
            step_times.append(timing.total_s)
        averager.add(result.values)
        if result.skipped:
            skipped += result.skipped
            if cfg.on_nonfinite == "rollback":
                netlib.rollback(nets, folder, step)
        session.meta["skipped_updates"] = skipped
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.iterations:
            _log_step(nets, params, session, step, averager, meter, timing, skipped, bar)
        if world.is_main and step % cfg.image_every == 0:
            strip = write_strip(
                folder / "samples" / f"step_{step:07d}.png", clips.frames, clips.masks, result.comp
            )
            session.run.log_artifact(strip, "samples")
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
            _checkpoint(nets, params, paths, session, step, world)
    bar.close()
    record = meter.gather(meter.stop())
    if not world.is_main:
        return None
    return _finish(nets, params, paths, session, record, step_times, start, skipped)


def _log_step(
    nets: netlib.Nets,
    params: Params,
    session: _Session,
    step: int,
    averager: Averager,
    meter: CostMeter,
    timing: Any,
    skipped: int,
    bar: tqdm,
) -> None:
    """Means since the last log (every rank pops: one sync), logged by rank 0."""
    means = averager.pop()
    if session.run is None:
        return
    means["lr/generator"] = nets.gen_optimizer.param_groups[0]["lr"]
    if nets.dis_optimizer is not None:
        means["lr/discriminator"] = nets.dis_optimizer.param_groups[0]["lr"]
    means["perf/clips_per_s"] = params.train.batch_size / max(timing.total_s, 1e-9)
    means["guard/skipped_updates"] = float(skipped)
    means |= meter.metrics_for_step(timing)
    session.run.log_metrics(means, step=step)
    session.history.append(step, means)
    bar.set_postfix(loss=f"{means['loss/generator']:.3f}", refresh=False)


def _finish(
    nets: netlib.Nets,
    params: Params,
    paths: TrainPaths,
    session: _Session,
    record: dict[str, Any],
    step_times: list[float],
    start: int,
    skipped: int,
) -> dict[str, Any]:
    """Rank 0: final weights, meter record, run id and the figures for DVC metrics."""
    run_dir = paths.run_dir
    _write_generator(nets, run_dir / "generator.pth")
    write_json(run_dir / "cost_raw.json", record)
    write_json(run_dir / "params_used.json", params.model_dump())
    session.run.log_artifact(session.history.path, "history")
    session.run.end()
    session.run.close()
    write_json(run_dir / "mlflow_run.json", run_record(session.run))
    last = session.history.last()
    median = statistics.median(step_times) if step_times else None
    return {
        "iterations": params.train.iterations,
        "resumed_from": start,
        "measured_steps": len(step_times),
        "step_time_median_s": median,
        "clips_per_s": params.train.batch_size / median if median else None,
        "skipped_updates": skipped,
        # A diverged run's last losses are NaN; DVC metrics are strict JSON, so they become null.
        **{
            k.replace("/", "_"): v if math.isfinite(v) else None
            for k, v in last.items()
            if k.startswith("loss/")
        },
    }
