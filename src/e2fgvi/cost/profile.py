"""``e2fgvi profile``: measure a few real training steps here and forecast the full schedule.

The core (``profile``) takes a step factory, ``clips per GPU -> step function``, where a step
function runs one complete training step on a fixed batch already on the device. The real
factory is ``e2fgvi.train.profiling.make_training_step``, the single integration point with the
trainer. ``run_profile`` is what both the ``profile`` DVC stage and this subcommand call.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from e2fgvi import tracking
from e2fgvi.atomic import write_json
from e2fgvi.config import CostParams, Params, load_params
from e2fgvi.cost.forecast import plan_clips_per_gpu
from e2fgvi.cost.mfu import precision_of
from e2fgvi.cost.publish import log_report
from e2fgvi.cost.summary import CostReport, build_report
from e2fgvi.devices import pick_device
from e2fgvi.errors import UserError
from e2fgvi.measure.flops import measure_step_flops
from e2fgvi.measure.meter import CostMeter
from e2fgvi.measure.record import FrozenModel, RankRecord
from e2fgvi.measure.totals import merge_ranks
from e2fgvi.train.profiling import StepFn, make_training_step

log = logging.getLogger(__name__)

StepFactory = Callable[[int], StepFn]


class ProbedSize(FrozenModel):
    clips: int
    fits: bool
    peak_reserved_gb: float


class MemoryProbe(FrozenModel):
    """The largest clips per GPU whose training step fits, and every size tried."""

    max_clips_per_gpu: int | None
    limit: int
    probed: list[ProbedSize]
    total_gb: float | None = None
    note: str


class ProfileReport(CostReport):
    """The cost report of the profiling window, its memory probe and the meter's record."""

    memory: MemoryProbe
    record: RankRecord


def profile_steps(
    step_fn: StepFn,
    cfg: CostParams,
    device: torch.device,
    clips: int,
    flops_per_step: float | None = None,
) -> RankRecord:
    """Run the profiling window (warm-up + measured steps) and return the meter's record."""
    window = cfg.forecast
    meter = CostMeter(cfg.model_copy(update={"warmup_steps": window.profile_warmup}), device, clips)
    if flops_per_step is not None:
        meter.set_flops_per_step(flops_per_step)
    meter.start()
    for step in range(window.profile_warmup + window.profile_steps):
        with meter.compute():
            step_fn()
        meter.end_step(step)
    return meter.stop()


def largest_fitting(fits: Callable[[int], bool], limit: int) -> int:
    """Largest n in [1, limit] with ``fits(n)`` (monotone): doubling, then bisection; 0 if none."""
    good, bad, n = 0, limit + 1, 1
    while n <= limit:
        if not fits(n):
            bad = n
            break
        good, n = n, n * 2
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def probe_memory(make_step: StepFactory, device: torch.device, limit: int) -> MemoryProbe:
    """The largest clips per GPU whose real training step fits in memory (GPU only)."""
    if device.type != "cuda":
        return MemoryProbe(
            max_clips_per_gpu=None,
            limit=limit,
            probed=[],
            note=f"memory probing is GPU-only (device is {device.type})",
        )
    probed: list[ProbedSize] = []

    def fits(clips: int) -> bool:
        torch.cuda.reset_peak_memory_stats(device)
        step, ok = None, True
        try:
            step = make_step(clips)
            step()
            step()  # optimiser state exists from the second step on
            torch.cuda.synchronize(device)
        except torch.cuda.OutOfMemoryError:
            ok = False
        peak = torch.cuda.max_memory_reserved(device) / 2**30
        del step
        gc.collect()
        torch.cuda.empty_cache()
        probed.append(ProbedSize(clips=clips, fits=ok, peak_reserved_gb=peak))
        return ok

    best = largest_fitting(fits, limit)
    return MemoryProbe(
        max_clips_per_gpu=best,
        limit=limit,
        probed=probed,
        total_gb=torch.cuda.get_device_properties(device).total_memory / 2**30,
        note="largest clips per GPU whose step ran twice without OOM (searched up to limit)",
    )


def profile(
    make_step: StepFactory,
    cfg: CostParams,
    device: torch.device,
    precision: str,
    rng: np.random.Generator,
) -> ProfileReport:
    """Profile at the plan's clips per GPU, count FLOPs, probe memory; report with forecast."""
    clips = plan_clips_per_gpu(cfg.forecast)
    step_fn = make_step(clips)
    flops = measure_step_flops(step_fn)  # also the first warm-up step
    record = profile_steps(step_fn, cfg, device, clips, flops_per_step=flops)
    del step_fn
    report = build_report(merge_ranks([record]), cfg, precision, rng)
    memory = probe_memory(make_step, device, cfg.forecast.probe_max_clips)
    return ProfileReport(**dict(report), memory=memory, record=record)


def with_plan(
    cfg: CostParams,
    gpus: int | None = None,
    iterations: int | None = None,
    global_batch: int | None = None,
) -> CostParams:
    """``cfg`` with the forecast plan's GPUs, iterations or global batch overridden."""
    given = {"gpus": gpus, "iterations": iterations, "global_batch": global_batch}
    overrides = {key: value for key, value in given.items() if value is not None}
    if any(v < 1 for v in overrides.values()):
        raise UserError("--gpus, --iterations and --global-batch must be positive")
    return cfg.model_copy(update={"forecast": cfg.forecast.model_copy(update=overrides)})


def run_profile(
    params: Params, cfg: CostParams, mlruns: Path, out: Path | None = None, track: bool = True
) -> ProfileReport:
    """Profile real training steps on this machine under ``cfg``'s plan; write and log it."""
    device = pick_device(params.train.device, key="train.device")
    precision = precision_of(params.train.amp, params.train.tf32)
    report = profile(
        lambda clips: make_training_step(params, device, clips),
        cfg,
        device,
        precision,
        np.random.default_rng(params.seed),
    )
    _log_summary(report)
    if out is not None:
        write_json(out, report.model_dump(mode="json"))
    if track:
        _track(report, params, mlruns, [out] if out is not None else [])
    return report


def _log_summary(report: ProfileReport) -> None:
    fc, memory = report.forecast, report.memory
    if fc is None:  # a window of warm-up steps only; ForecastParams.profile_steps forbids it
        log.info("no forecast: %s", report.forecast_note)
        return
    log.info(
        "forecast for %d iterations on %d GPU(s): %.1f h wall (%.1f–%.1f), %.0f GPU-hours, "
        "%.0f %s; max clips per GPU: %s",
        fc.iterations,
        fc.gpus,
        fc.wall_h.mean,
        fc.wall_h.low,
        fc.wall_h.high,
        fc.gpu_hours.mean,
        fc.money.mean,
        fc.currency,
        memory.max_clips_per_gpu if memory.max_clips_per_gpu is not None else memory.note,
    )


def _track(report: ProfileReport, params: Params, mlruns: Path, artifacts: list[Path]) -> None:
    """The profile as its own MLflow run (tag ``cost.kind=profile``)."""
    logger = tracking.RunLogger(
        uri=tracking.tracking_uri(mlruns),
        experiment=params.tracking.experiment,
        run_name=f"profile-{report.measured.device_names[0]}",
        artifact_root=mlruns,
    )
    log_report(logger, report, artifacts, kind="profile")
    if not artifacts:
        logger.log_text(json.dumps(report.model_dump(mode="json"), indent=2), "cost/profile.json")
    logger.log_metrics({"cost/forecast_max_clips_per_gpu": report.memory.max_clips_per_gpu})
    logger.end()
    logger.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--mlruns", type=Path, default=Path("mlruns"), help="MLflow store folder")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    parser.add_argument("--gpus", type=int, help="override cost.forecast.gpus")
    parser.add_argument("--iterations", type=int, help="override cost.forecast.iterations")
    parser.add_argument("--global-batch", type=int, help="override cost.forecast.global_batch")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = with_plan(params.cost, args.gpus, args.iterations, args.global_batch)
    run_profile(params, cfg, args.mlruns, out=args.out, track=not args.no_track)
    return 0
