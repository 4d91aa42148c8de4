"""``e2fgvi profile``: measure real training steps of a plan here and forecast what it costs.

A plan is a params file (``--plan``, ``params.official.yaml`` by default; see
``e2fgvi.cost.plan``). The core (``measure``) takes a step factory, ``clips per device -> step
function``, where a step function runs one complete training step on a fixed batch already on
the device; the real factory is ``e2fgvi.train.profiling.make_training_step`` on the plan's
model configuration. Each measured precision gets its own window (and, on a GPU, memory probe);
the plan's own precision, or fp32 where it cannot run here, is the primary measurement the
plan's forecast comes from. ``run_profile`` is what both the ``profile`` DVC stage and this
subcommand call.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from e2fgvi.config import CostParams, Params, load_params
from e2fgvi.cost import profile_report, profile_run, switches
from e2fgvi.cost.mfu import precision_of
from e2fgvi.cost.plan import Plan, StepShape, load_plan, measured_params
from e2fgvi.cost.profile_devices import profile_devices
from e2fgvi.cost.profile_report import Measurement, MemoryProbe, ProbedSize, ProfileReport
from e2fgvi.cost.summary import summarise
from e2fgvi.cpufeatures import slow_bf16
from e2fgvi.data.dataset import TrainClips
from e2fgvi.devices import pick_device
from e2fgvi.errors import UserError
from e2fgvi.measure.flops import measure_step_flops
from e2fgvi.measure.meter import CostMeter
from e2fgvi.measure.record import RankRecord
from e2fgvi.measure.totals import merge_ranks
from e2fgvi.train.profiling import StepFn, make_training_step

log = logging.getLogger(__name__)

StepFactory = Callable[[int], StepFn]


def profile_steps(
    step_fn: StepFn, cfg: CostParams, device: torch.device, clips: int, flops: float | None = None
) -> RankRecord:
    """Run the profiling window (warm-up + measured steps) and return the meter's record.

    ``flops`` given means one step already ran (counting them): it was the first warm-up step.
    """
    window = cfg.forecast
    warmup = max(0, window.profile_warmup - (flops is not None))
    meter = CostMeter(cfg.model_copy(update={"warmup_steps": warmup}), device, clips)
    if flops is not None:
        meter.set_flops_per_step(flops)
    meter.start()
    for step in range(warmup + window.profile_steps):
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
    """The largest clips per device whose real training step fits in memory (GPU only)."""
    if device.type != "cuda":
        return MemoryProbe(
            max_clips_per_device=None,
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
        max_clips_per_device=best,
        limit=limit,
        probed=probed,
        total_gb=torch.cuda.get_device_properties(device).total_memory / 2**30,
        note="largest clips per device whose step ran twice without OOM (searched up to limit)",
    )


def measure(
    make_step: StepFactory,
    cfg: CostParams,
    device: torch.device,
    shape: StepShape,
    derivation: list[str] | None = None,
) -> Measurement:
    """Probe memory (GPU), then time the window at ``shape``'s clips, or the most that fit."""
    limit = max(cfg.forecast.probe_max_clips, shape.clips_per_device)
    memory = probe_memory(make_step, device, limit)
    clips = shape.clips_per_device
    if memory.max_clips_per_device is not None:
        if memory.max_clips_per_device == 0:
            raise UserError(
                f"one clip of the plan's step ({shape.variant} {shape.width}x{shape.height}, "
                f"{shape.precision}) does not fit in {device}'s memory"
            )
        clips = min(clips, memory.max_clips_per_device)
    step_fn = make_step(clips)
    flops = measure_step_flops(step_fn)  # the first warm-up step
    record = profile_steps(step_fn, cfg, device, clips, flops)
    del step_fn
    gc.collect()
    return Measurement(
        step=shape.model_copy(update={"clips_per_device": clips}),
        summary=summarise(merge_ranks([record]), cfg, shape.precision),
        memory=memory,
        derivation=derivation or [],
        record=record,
    )


def runnable(amp: str, device: torch.device) -> bool:
    """Whether autocast to ``amp`` can run on ``device`` (fp16 needs CUDA)."""
    return not (amp == "fp16" and device.type != "cuda")


def precisions(
    plan_params: Params, extra: list[str], device: torch.device
) -> list[tuple[str, str]]:
    """(amp to run, why it stands in for the plan's) for the primary and each extra precision.

    The primary is the plan's ``train.amp``, or fp32 where that cannot run on ``device``.
    """
    plan_amp = plan_params.train.amp
    primary = [(plan_amp, "")]
    if not runnable(plan_amp, device):
        why = f"the plan's {plan_amp} cannot run on {device.type}: measured fp32, not scaled"
        primary = [("fp32", why)]
    chosen = dict(primary)
    for amp in {plan_amp, *extra}:
        if warning := slow_bf16(amp, device.type):
            log.warning("%s", warning)
    for amp in extra:
        if not runnable(amp, device):
            log.warning("precision %s cannot run on %s: not measured", amp, device.type)
        else:
            chosen.setdefault(amp, "")
    return list(chosen.items())


def build_profile(
    plan: Plan,
    plan_params: Params,
    cfg: CostParams,
    device: torch.device,
    rng: np.random.Generator,
    extra_precisions: list[str] = (),
    clips: int | None = None,
    make_step: Callable[[Params, torch.device, int], StepFn] = make_training_step,
) -> ProfileReport:
    """Measure the plan's step at each precision here; forecast the plan and its budget table."""
    measurements = []
    for amp, why in precisions(plan_params, list(extra_precisions), device):
        params = measured_params(plan_params, amp)
        shape = plan.step.model_copy(
            update={
                "precision": precision_of(amp, params.train.tf32),
                "clips_per_device": clips or plan.step.clips_per_device,
            }
        )
        log.info(
            "profiling %s at %d clip(s) per device on %s",
            shape.precision,
            shape.clips_per_device,
            device,
        )
        factory = lambda n, params=params: make_step(params, device, n)  # noqa: E731
        measurements.append(measure(factory, cfg, device, shape, [why] if why else []))
    return profile_report.assemble(plan, measurements, cfg, rng)


def run_profile(
    params: Params,
    planned: tuple[Params, Plan],
    mlruns: Path,
    out: Path | None = None,
    *,
    track: bool = True,
    device: str = "auto",
    extra_precisions: list[str] = (),
    clips: int | None = None,
    time_switches: bool = True,
) -> ProfileReport:
    """Profile the plan's steps (``load_plan``'s result) on this machine under ``params.cost``,
    and its speed switches (``cost.switches``); write and log it."""
    plan_params, plan = planned
    if clips is not None and clips < 1:
        raise UserError("--clips must be positive")
    picked = pick_device(device, key="--device")
    started_ms = int(time.time() * 1000)  # the profile run's start: its duration is the profile's
    report = build_profile(
        plan,
        plan_params,
        params.cost,
        picked,
        np.random.default_rng(params.seed),
        extra_precisions,
        clips,
    )
    lines, extra = profile_devices(plan_params, plan, params.cost, picked, report.device_name, out)
    report = report.model_copy(update={"other_devices": lines})

    if time_switches and params.cost.switches.candidates:
        found = switches.measure_switches(
            plan_params, params.cost.switches, picked, make_training_step
        )
        switches.log_report(found)
        report = report.model_copy(update={"switches": found})
    profile_report.log_summary(report)
    paths = profile_report.write(out, report) + extra if out is not None else []
    if track:
        profile_run.track(report, params, mlruns, paths, started_ms)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="prices, peaks, profiling window (cost.*), MLflow experiment",
    )
    parser.add_argument(
        "--plan",
        type=Path,
        default=Path("params.official.yaml"),
        help="the params file you will train with (default: the official recipe)",
    )
    parser.add_argument("--mlruns", type=Path, default=Path("mlruns"), help="MLflow store folder")
    parser.add_argument("--out", type=Path, help="also write the report files into this folder")
    parser.add_argument("--devices", type=int, help="override the plan's devices")
    parser.add_argument("--iterations", type=int, help="override the plan's iterations")
    parser.add_argument("--global-batch", type=int, help="override the plan's global batch")
    parser.add_argument(
        "--precision",
        action="append",
        choices=["fp32", "bf16", "fp16"],
        default=[],
        help="also measure this autocast precision (repeatable)",
    )
    parser.add_argument(
        "--clips",
        type=int,
        help="measure at this many clips per device (step time then assumed linear in clips)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--no-switches", action="store_true", help="do not time the speed switches (cost.switches)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/youtube-vos"),
        help="prepared data set whose loader clips/s is measured, to print the loader workers "
        "one device needs; skipped when absent",
    )


def measure_loader(params: Params, data: Path, clips: int = 4) -> dict[str, object]:
    """Clips per second of ONE loader worker on the prepared data: ``dataset[i]`` in a loop.

    What a DataLoader worker does (read, decode, resize, masks, tensors) with one torch thread,
    as in a worker; one untimed clip first (it opens the zip), then ``clips`` timed ones.
    """
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
    train = params.train
    return {
        "clips_per_s_per_worker": clips / elapsed,
        "clips_timed": clips,
        "decode": train.decode,
        "clip": f"{train.num_local_frames}+{train.num_ref_frames} frames at "
        f"{train.width}x{train.height}",
    }


def loader_workers(
    clips_per_device: int, step_s: float | None, loader: dict[str, object]
) -> dict[str, object]:
    """Loader workers one device needs to keep up with a step time (None: no step time)."""
    if step_s is None:
        return {**loader, "workers_per_device": None, "note": "no forecast step time"}
    need = clips_per_device / step_s
    return {
        **loader,
        "clips_per_s_needed_per_device": need,
        "workers_per_device": math.ceil(need / float(loader["clips_per_s_per_worker"])),
        "derivation": "ceil(clips per device / forecast mean step time / measured clips/s of "
        "one worker); the worker rate is this machine's (one core), the step time the forecast's",
    }


def loader_line(loader: dict[str, object]) -> str:
    """The one log line of the loader check."""
    if loader.get("workers_per_device") is None:
        return f"loader workers not computed: {loader.get('note')}"
    return (
        f"loader: one worker reads {loader['clips_per_s_per_worker']:.2f} clips/s "
        f"({loader['clip']}, decode {loader['decode']}); one device needs "
        f"{loader['clips_per_s_needed_per_device']:.2f} clips/s at the forecast step time, i.e. "
        f"{loader['workers_per_device']} loader worker(s) ({loader['derivation']})"
    )


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    planned = load_plan(
        args.plan, devices=args.devices, iterations=args.iterations, global_batch=args.global_batch
    )
    report = run_profile(
        params,
        planned,
        args.mlruns,
        args.out,
        track=not args.no_track,
        device=args.device,
        extra_precisions=args.precision,
        clips=args.clips,
        time_switches=not args.no_switches,
    )
    if args.data is not None and (args.data / "train.json").is_file():
        fc = report.forecast
        measured = measure_loader(planned[0], args.data)  # the plan's clip, size, decode
        if fc is None:
            loader = loader_workers(1, None, measured)
        else:
            loader = loader_workers(fc.clips_per_device, fc.step_s.mean, measured)
        log.info("%s", loader_line(loader))
    else:
        log.info("loader workers not measured: no prepared data at %s (--data)", args.data)
    return 0
