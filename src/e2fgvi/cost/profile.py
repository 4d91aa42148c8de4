"""``e2fgvi profile``: measure a few real training steps here and forecast the full schedule.

The core (``profile``) takes a step factory, ``clips per GPU -> step function``, where a step
function runs one complete training step on a fixed batch already on the device. The real
factory is ``make_training_step``, the single integration point with the trainer.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2fgvi import tracking
from e2fgvi.atomic import write_json
from e2fgvi.config import CostParams, Params, load_params
from e2fgvi.cost.flops import measure_step_flops, precision_of
from e2fgvi.cost.forecast import plan_clips_per_gpu
from e2fgvi.cost.meter import CostMeter
from e2fgvi.cost.publish import log_report
from e2fgvi.cost.record import merge_ranks
from e2fgvi.cost.summary import build_report
from e2fgvi.errors import UserError

log = logging.getLogger(__name__)

StepFn = Callable[[], Any]
StepFactory = Callable[[int], StepFn]


def make_training_step(params: Params, device: torch.device, clips: int) -> StepFn:
    """One full E2FGVI training step (G forward, D update, G update) on ``clips`` clips.

    The batch is fixed and synthetic (frames in [-1, 1], real random masks) at the train size,
    so the window measures compute alone; SPyNet starts random, which costs the same as
    pretrained weights.
    """
    from e2fgvi.data.masks import random_mask_sequence
    from e2fgvi.train import precision
    from e2fgvi.train.distributed import World
    from e2fgvi.train.loop import train_step
    from e2fgvi.train.nets import build_nets
    from e2fgvi.train.steps import Clips

    cfg = params.train
    model = params.model.model_copy(update={"spynet_init": "random"})
    params = params.model_copy(update={"model": model})
    world = World(0, 0, 1, device)
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


def profile_steps(step_fn: StepFn, cfg: CostParams, device: torch.device, clips: int) -> dict:
    """Run the profiling window (warm-up + measured steps) and return the meter's record."""
    window = cfg.forecast
    meter = CostMeter(cfg.model_copy(update={"warmup_steps": window.profile_warmup}), device, clips)
    meter.start()
    for step in range(window.profile_warmup + window.profile_steps):
        with meter.compute():
            step_fn()
        meter.end_step(step)
    return meter.stop()


def measure_loader(params: Params, data: Path, clips: int = 4) -> dict[str, Any]:
    """Clips per second of ONE loader worker on the prepared data: ``dataset[i]`` in a loop.

    What a DataLoader worker does (read, decode, resize, masks, tensors), one torch thread as
    in a worker; one untimed clip first (it opens the zip), then ``clips`` timed ones.
    """
    from e2fgvi.data.dataset import TrainClips

    dataset = TrainClips(
        data / "JPEGImages", data / "train.json", params.train, params.masks, params.seed
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset[0]
        start = time.perf_counter()
        for i in range(1, clips + 1):
            dataset[i]
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {
        "clips_per_s_per_worker": clips / elapsed,
        "clips_timed": clips,
        "data": str(data),
        "decode": params.train.decode,
        "clip": f"{params.train.num_local_frames}+{params.train.num_ref_frames} frames at "
        f"{params.train.width}x{params.train.height}",
    }


def loader_workers(forecast: dict[str, Any] | None, loader: dict[str, Any]) -> dict[str, Any]:
    """Loader workers one GPU needs to keep up with the forecast's step time."""
    if forecast is None:
        return {**loader, "workers_per_gpu": None, "note": "no forecast step time"}
    need = forecast["clips_per_gpu"] / forecast["step_s"]["mean"]
    return {
        **loader,
        "clips_per_s_needed_per_gpu": need,
        "workers_per_gpu": math.ceil(need / loader["clips_per_s_per_worker"]),
        "derivation": "ceil(clips per GPU / forecast mean step time / measured clips/s of one "
        "worker); the worker rate is this machine's (one core), the step time the forecast's",
    }


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


def probe_memory(make_step: StepFactory, device: torch.device, limit: int) -> dict[str, Any]:
    """The largest clips per GPU whose real training step fits in memory (GPU only)."""
    if device.type != "cuda":
        return {
            "max_clips_per_gpu": None,
            "limit": limit,
            "probed": [],
            "note": f"memory probing is GPU-only (device is {device.type})",
        }
    probed: list[dict[str, Any]] = []

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
        probed.append({"clips": clips, "fits": ok, "peak_reserved_gb": peak})
        return ok

    best = largest_fitting(fits, limit)
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    return {
        "max_clips_per_gpu": best,
        "limit": limit,
        "probed": probed,
        "total_gb": total,
        "note": "largest clips per GPU whose step ran twice without OOM (searched up to limit)",
    }


def profile(
    make_step: StepFactory,
    cfg: CostParams,
    device: torch.device,
    precision: str,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Profile at the plan's clips per GPU, count FLOPs, probe memory; report with forecast."""
    clips = plan_clips_per_gpu(cfg.forecast)
    step_fn = make_step(clips)
    flops = measure_step_flops(step_fn)  # also the first warm-up step
    record = profile_steps(step_fn, cfg, device, clips)
    record["flops_per_step"] = flops
    del step_fn
    gathered = merge_ranks([record])
    report = build_report(gathered, cfg, precision, rng)
    report["memory"] = probe_memory(make_step, device, cfg.forecast.probe_max_clips)
    report["record"] = record
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--mlruns", type=Path, default=Path("mlruns"), help="MLflow store folder")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    parser.add_argument("--gpus", type=int, help="override cost.forecast.gpus")
    parser.add_argument("--iterations", type=int, help="override cost.forecast.iterations")
    parser.add_argument("--global-batch", type=int, help="override cost.forecast.global_batch")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/youtube-vos"),
        help="prepared dataset (JPEGImages/, train.json) whose loader clips/s is measured, "
        "to print the loader workers one GPU needs; skipped when absent",
    )


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml: train.device is cuda but no CUDA device is visible")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _plan(cfg: CostParams, args: argparse.Namespace) -> CostParams:
    overrides = {
        key: value
        for key, value in (
            ("gpus", args.gpus),
            ("iterations", args.iterations),
            ("global_batch", args.global_batch),
        )
        if value is not None
    }
    if any(v < 1 for v in overrides.values()):
        raise UserError("--gpus, --iterations and --global-batch must be positive")
    return cfg.model_copy(update={"forecast": cfg.forecast.model_copy(update=overrides)})


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = _plan(params.cost, args)
    device = _device(params.train.device)
    precision = precision_of(params.train.amp, params.train.tf32)
    report = profile(
        lambda clips: make_training_step(params, device, clips),
        cfg,
        device,
        precision,
        np.random.default_rng(params.seed),
    )
    fc, memory = report["forecast"], report["memory"]
    data = getattr(args, "data", None)
    if data is not None and (data / "train.json").is_file():
        report["loader"] = loader_workers(fc, measure_loader(params, data))
        log.info(
            "loader: one worker reads %.2f clips/s (%s, decode %s); one GPU needs %s worker(s) "
            "at the forecast step time (%s)",
            report["loader"]["clips_per_s_per_worker"],
            report["loader"]["clip"],
            report["loader"]["decode"],
            report["loader"]["workers_per_gpu"],
            report["loader"].get("derivation", report["loader"].get("note")),
        )
    else:
        report["loader"] = {"workers_per_gpu": None, "note": f"no prepared data at {data}"}
    log.info(
        "forecast for %d iterations on %d GPU(s): %.1f h wall (%.1f–%.1f), %.0f GPU-hours, "
        "%.0f %s; max clips per GPU: %s",
        fc["iterations"],
        fc["gpus"],
        fc["wall_h"]["mean"],
        fc["wall_h"]["low"],
        fc["wall_h"]["high"],
        fc["gpu_hours"]["mean"],
        fc["money"]["mean"],
        fc["currency"],
        memory["max_clips_per_gpu"] if memory["max_clips_per_gpu"] is not None else memory["note"],
    )
    artifacts = []
    if args.out:
        write_json(args.out, report)
        artifacts.append(args.out)
    if not args.no_track:
        logger = tracking.RunLogger(
            uri=tracking.tracking_uri(args.mlruns),
            experiment=params.tracking.experiment,
            run_name=f"profile-{report['measured']['device_names'][0]}",
            artifact_root=args.mlruns,
        )
        log_report(logger, report, artifacts, kind="profile")
        if not artifacts:
            logger.log_text(json.dumps(report, indent=2), "cost/profile.json")
        logger.log_metrics({"cost/forecast_max_clips_per_gpu": memory["max_clips_per_gpu"]})
        logger.end()
        logger.close()
    return 0
