"""Speed switches on this device: which apply, their step time against fp32, and the pick.

``e2fgvi profile`` (and the ``profile`` stage) calls ``measure_switches``: the plan's step in
fp32 first, then each candidate of ``cost.switches`` that applies here (``why_not``), each a
fresh network from the same seed on the same batch, ``warmup`` + ``steps`` real training steps
of the plan's step with ``cost.switches.frames`` frames (fewer than the plan's, to keep it
short). A switch's time is the median of its timed steps; its loss deviation the largest
relative difference of any loss term from fp32's over all its steps. ``recommend`` picks the
fastest switch within ``loss_rtol`` that is at least ``min_speedup`` x fp32; where none is, it
recommends fp32 (the defaults): a switch slower than fp32 on this device is never recommended.
A switch's effect depends on the device (docs/speed.md), so the pick holds for this device only.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from pydantic import ValidationError

from e2fgvi.config import Params, SwitchParams, TrainParams
from e2fgvi.cpufeatures import Bf16Support, cpu_bf16, cpu_model
from e2fgvi.errors import UserError, first_problem
from e2fgvi.measure.record import FrozenModel

log = logging.getLogger(__name__)

BASELINE = "fp32"
StepMaker = Callable[[Params, torch.device, int], Callable[[], Any]]
Clock = Callable[[], float]


class SwitchResult(FrozenModel):
    """One switch here: measured (time, speed-up over fp32, loss deviation) or why not."""

    name: str
    settings: dict[str, str | bool]
    measured: bool
    note: str = ""
    step_s: float | None = None
    speedup: float | None = None
    loss_deviation: float | None = None


class SwitchReport(FrozenModel):
    """Every candidate switch on this device and the one recommended, with the conditions."""

    device: str
    shape: str
    window: str
    loss_rtol: float
    min_speedup: float
    results: list[SwitchResult]
    recommended: str
    reason: str
    warnings: list[str]


def why_not(settings: dict[str, Any], device: torch.device, bf16: Bf16Support) -> str:
    """Why a switch does not apply on ``device`` ("" where it does)."""
    amp = settings.get("amp")
    if device.type == "cuda":
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16"
        return ""
    if amp == "fp16":
        return "fp16 autocast needs CUDA"
    if settings.get("tf32"):
        return "TF32 is a CUDA switch"
    if amp == "bf16" and not bf16.native:
        return (
            f"bf16 autocast refused on this CPU: {bf16.detail}; emulated bf16 was measured "
            "several times slower than fp32 (docs/speed.md)"
        )
    return ""


def switched(plan_params: Params, name: str, settings: dict[str, Any], cfg: SwitchParams) -> Params:
    """The plan's params, shrunk to ``cfg.frames``, with ``settings``; SPyNet random."""
    shrink = dict(zip(("num_local_frames", "num_ref_frames"), cfg.frames, strict=False))
    update = shrink | settings
    try:
        train = TrainParams.model_validate(plan_params.train.model_dump() | update)
    except ValidationError as exc:
        raise UserError(
            f"cost.switches.candidates.{name}: {first_problem(exc, 'train')} (train.* keys)"
        ) from None
    model = plan_params.model.model_copy(update={"spynet_init": "random"})
    return plan_params.model_copy(update={"train": train, "model": model})


def run_switch(
    params: Params, device: torch.device, make_step: StepMaker, cfg: SwitchParams, clock: Clock
) -> tuple[float, list[dict[str, float]]]:
    """Median seconds of the timed steps and every step's loss terms (one clip)."""
    step = make_step(params, device, 1)
    times, losses = [], []
    for i in range(cfg.warmup + cfg.steps):
        start = clock()
        result = step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= cfg.warmup:
            times.append(clock() - start)
        values = getattr(result, "values", {})
        losses.append({k: float(v) for k, v in values.items() if k.startswith("loss/")})
    del step
    gc.collect()
    return statistics.median(times), losses


def deviation(losses: list[dict[str, float]], reference: list[dict[str, float]]) -> float:
    """Largest relative difference of any loss term from the reference's, over all steps."""
    worst = 0.0
    for ours, ref in zip(losses, reference, strict=True):
        for key, value in ref.items():
            worst = max(worst, abs(ours[key] - value) / max(abs(value), 1e-8))
    return worst


def recommend(results: list[SwitchResult], cfg: SwitchParams) -> tuple[str, str]:
    """The fastest measured switch within the loss tolerance and >= min_speedup; else fp32."""
    fit = [
        r
        for r in results
        if r.measured
        and r.name != BASELINE
        and r.loss_deviation is not None
        and r.loss_deviation <= cfg.loss_rtol
        and r.speedup is not None
        and r.speedup >= cfg.min_speedup
    ]
    if not fit:
        return BASELINE, (
            f"no switch was at least {cfg.min_speedup:g}x the fp32 step within loss deviation "
            f"{cfg.loss_rtol:g} on this device: keep the defaults"
        )
    best = max(fit, key=lambda r: r.speedup or 0.0)
    return best.name, (
        f"fastest switch within loss deviation {cfg.loss_rtol:g}: {best.speedup:.2f}x the fp32 "
        f"step (loss deviation {best.loss_deviation:.1e}), measured on this device"
    )


def device_line(device: torch.device, bf16: Bf16Support) -> str:
    """The device the switches were timed on, in words (CPU: model, kernels, threads, bf16)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return (
        f"cpu: {cpu_model()}, torch kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} torch threads; {bf16.detail}"
    )


def measure_switches(
    plan_params: Params,
    cfg: SwitchParams,
    device: torch.device,
    make_step: StepMaker,
    clock: Clock = time.perf_counter,
    bf16: Bf16Support | None = None,
) -> SwitchReport:
    """Time fp32 and every candidate that applies here; recommend one (see the module doc)."""
    bf16 = bf16 or cpu_bf16()
    base = switched(plan_params, BASELINE, {"amp": "fp32"}, cfg)
    log.info("timing the speed switches on %s", device)
    base_s, base_losses = run_switch(base, device, make_step, cfg, clock)
    results = [
        SwitchResult(
            name=BASELINE, settings={}, measured=True, step_s=base_s, speedup=1.0, loss_deviation=0
        )
    ]
    warnings = []
    for name, settings in cfg.candidates.items():
        params = switched(plan_params, name, settings, cfg)
        why = why_not(settings, device, bf16)
        if why:
            if settings.get("amp") == "bf16":  # the one that would run, slowly
                warnings.append(f"{name}: {why}")
            results.append(SwitchResult(name=name, settings=settings, measured=False, note=why))
            continue
        step_s, losses = run_switch(params, device, make_step, cfg, clock)
        dev = deviation(losses, base_losses)
        results.append(
            SwitchResult(
                name=name,
                settings=settings,
                measured=True,
                step_s=step_s,
                speedup=base_s / step_s,
                loss_deviation=dev,
                note="" if dev <= cfg.loss_rtol else f"loss deviation above {cfg.loss_rtol:g}",
            )
        )
    picked, reason = recommend(results, cfg)
    train = base.train
    return SwitchReport(
        device=device_line(device, bf16),
        shape=f"{base.model.variant} {train.width}x{train.height}, "
        f"{train.num_local_frames}+{train.num_ref_frames} frames, 1 clip",
        window=f"{cfg.warmup} warm-up + {cfg.steps} timed step(s) per switch, one run each, "
        "fp32 first; time = median of the timed steps",
        loss_rtol=cfg.loss_rtol,
        min_speedup=cfg.min_speedup,
        results=results,
        recommended=picked,
        reason=reason,
        warnings=warnings,
    )


def markdown_lines(report: SwitchReport) -> list[str]:
    """The profile report's switch section: one row per candidate, then the pick."""
    lines = [
        f"Timed on {report.device}; {report.shape}; {report.window}. Speed-up = fp32 step / "
        "switch step, on this device only; loss deviation = largest relative difference of "
        "any loss term from fp32's over the same steps.",
        "",
        "| switch | step (s) | speed-up vs fp32 | loss deviation | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report.results:
        if r.measured:
            lines.append(
                f"| {r.name} | {r.step_s:.2f} | {r.speedup:.2f}x | {r.loss_deviation:.1e} | "
                f"{r.note} |"
            )
        else:
            lines.append(f"| {r.name} | - | not measured | - | {r.note} |")
    lines += ["", f"**Recommended here: {report.recommended}** ({report.reason})."]
    lines += [f"- Warning: {w}" for w in report.warnings]
    return lines


def log_report(report: SwitchReport) -> None:
    """The pick and every warning, in the log (never silently slow)."""
    for warning in report.warnings:
        log.warning("speed switch %s", warning)
    for r in report.results:
        if r.measured:
            log.info(
                "switch %s: %.2f s/step, %.2fx fp32, loss deviation %.1e",
                r.name,
                r.step_s,
                r.speedup,
                r.loss_deviation,
            )
    log.info("recommended speed switch here: %s (%s)", report.recommended, report.reason)
