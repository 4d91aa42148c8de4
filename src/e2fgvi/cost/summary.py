"""What a measured run cost: GPU-hours, energy, money, throughput, MFU (pure functions)."""

from __future__ import annotations

import numpy as np

from e2fgvi.config import CostParams
from e2fgvi.cost.forecast import Forecast, StepSample, forecast
from e2fgvi.cost.mfu import mfu, peak_flops
from e2fgvi.measure.record import CostRecord, FrozenModel, RankRecord, Scalar, Totals
from e2fgvi.measure.totals import sum_or_none

_J_PER_KWH = 3.6e6


class Sessions(FrozenModel):
    """Time, GPU-seconds, energy and CPU time summed over a resumed experiment's sessions."""

    sessions: int
    wall_s: float
    gpu_s: float
    gpu_energy_j: float | None
    cpu_energy_j: float | None
    steps_total: int
    cpu_time_s: float


class Measured(FrozenModel):
    """The measured figures of the report (``cost/…`` metrics; None: not measured here)."""

    device_names: list[str]
    gpus: int
    ranks: int
    precision: str
    sessions: int
    wall_h: float
    steps_total: int
    steps_measured: int
    gpu_hours: float | None
    gpu_hours_per_1k_iter: float | None
    energy_gpu_kwh: float | None
    energy_cpu_kwh: float | None
    energy_kwh: float | None
    energy_sources: list[str]
    gpu_power_w: float | None
    money: float | None
    money_gpu_hours: float | None
    money_energy: float | None
    currency: str
    step_time_median_s: float | None
    step_time_p90_s: float | None
    step_time_mean_s: float | None
    data_wait_median_s: float | None
    compute_median_s: float | None
    clips_per_s: float | None
    clips_per_s_per_gpu: float | None
    clips_per_s_per_rank: float | None
    flops_per_step: float | None
    mfu: float | None
    peak_allocated_gb: float | None
    peak_reserved_gb: float | None
    cpu_hours: float
    peak_rss_mb: float
    meter_overhead_pct: float | None
    meter_overhead_per_step_us: float | None


class CostReport(FrozenModel):
    """The cost stage's report (``cost.json``): measured figures, forecast, conditions, notes."""

    measured: Measured
    forecast: Forecast | None
    forecast_note: str
    conditions: dict[str, Scalar]
    notes: list[str]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def gpu_power_w(totals: Totals) -> float | None:
    """Mean power per GPU over the whole run (energy over wall time)."""
    if not totals.gpus:
        return None
    return _ratio(totals.gpu_energy_j, totals.wall_s * totals.gpus)


def _energy(overall: Sessions) -> dict[str, float | None]:
    gpu = _ratio(overall.gpu_energy_j, _J_PER_KWH)
    cpu = _ratio(overall.cpu_energy_j, _J_PER_KWH)
    known = [e for e in (gpu, cpu) if e is not None]
    return {
        "energy_gpu_kwh": gpu,
        "energy_cpu_kwh": cpu,
        "energy_kwh": sum(known) if known else None,
    }


def all_sessions(totals: Totals, previous: list[Totals]) -> Sessions:
    """Time, GPU-seconds, energy and CPU time summed over a resumed experiment's sessions.

    ``previous`` holds the totals of the earlier (interrupted or shorter) sessions; each counts
    up to its last checkpoint snapshot. Step statistics stay those of the latest session.
    """
    sessions = [*previous, totals]
    return Sessions(
        sessions=len(sessions),
        wall_s=sum(t.wall_s for t in sessions),
        gpu_s=sum(t.wall_s * t.gpus for t in sessions),
        gpu_energy_j=sum_or_none([t.gpu_energy_j for t in sessions]),
        cpu_energy_j=sum_or_none([t.cpu_energy_j for t in sessions]),
        steps_total=sum(t.steps_total for t in sessions),
        cpu_time_s=sum(t.cpu_time_s for t in sessions),
    )


def _money(gpu_hours: float | None, energy_kwh: float | None, cfg: CostParams) -> dict:
    money_gpu = gpu_hours * cfg.price_per_gpu_hour if gpu_hours is not None else None
    money_energy = energy_kwh * cfg.price_per_kwh if energy_kwh is not None else None
    parts = [m for m in (money_gpu, money_energy) if m is not None]
    return {
        "money": sum(parts) if parts else None,
        "money_gpu_hours": money_gpu,
        "money_energy": money_energy,
    }


def summarise(record: CostRecord, cfg: CostParams, precision: str) -> Measured:
    """Cost figures of a gathered record (all its sessions) under ``cfg``'s prices and peaks."""
    totals = record.totals
    gpus = totals.gpus
    overall = all_sessions(totals, record.previous_sessions)
    gpu_hours = overall.gpu_s / 3600.0 if gpus else None
    energy = _energy(overall)
    steady_gpu_h = totals.step_s_mean * gpus / 3600.0 if gpus and totals.step_s_mean else None
    overhead = totals.overhead_fraction
    return Measured(
        device_names=totals.device_names,
        gpus=gpus,
        ranks=totals.ranks,
        precision=precision,
        sessions=overall.sessions,
        wall_h=overall.wall_s / 3600.0,
        steps_total=overall.steps_total,
        steps_measured=totals.steps_measured,
        gpu_hours=gpu_hours,
        gpu_hours_per_1k_iter=steady_gpu_h * 1000 if steady_gpu_h is not None else None,
        **energy,
        energy_sources=totals.energy_sources,
        gpu_power_w=gpu_power_w(totals),
        **_money(gpu_hours, energy["energy_kwh"], cfg),
        currency=cfg.currency,
        step_time_median_s=totals.step_s_median,
        step_time_p90_s=totals.step_s_p90,
        step_time_mean_s=totals.step_s_mean,
        data_wait_median_s=totals.data_wait_s_median,
        compute_median_s=totals.compute_s_median,
        clips_per_s=totals.clips_per_s,
        clips_per_s_per_gpu=_ratio(totals.clips_per_s, gpus),
        clips_per_s_per_rank=_ratio(totals.clips_per_s, totals.ranks),
        flops_per_step=totals.flops_per_step,
        mfu=mfu(totals, record.ranks, cfg, precision),
        peak_allocated_gb=totals.peak_allocated_gb,
        peak_reserved_gb=totals.peak_reserved_gb,
        cpu_hours=overall.cpu_time_s / 3600.0,
        peak_rss_mb=totals.peak_rss_mb,
        meter_overhead_pct=100 * overhead if overhead is not None else None,
        meter_overhead_per_step_us=totals.overhead_per_step_us,
    )


METRIC_KEYS = (
    "gpus", "wall_h", "gpu_hours", "gpu_hours_per_1k_iter", "energy_kwh", "energy_gpu_kwh",
    "energy_cpu_kwh", "gpu_power_w", "money", "step_time_median_s", "step_time_p90_s",
    "data_wait_median_s", "compute_median_s", "clips_per_s", "clips_per_s_per_gpu", "mfu",
    "peak_allocated_gb", "peak_reserved_gb", "cpu_hours", "peak_rss_mb", "meter_overhead_pct",
    "sessions",
)  # fmt: skip


def summary_metrics(measured: Measured) -> dict[str, float | None]:
    """``cost/…`` metrics for MLflow; None marks a figure not measured here."""
    return {f"cost/{key}": getattr(measured, key) for key in METRIC_KEYS}


def _gpu_notes(ranks: list[RankRecord]) -> list[str]:
    notes = []
    for note in sorted({r.gpu_note for r in ranks}):
        notes.append("GPU sampling (NVML): " + ("on" if note == "ok" else note))
    for r in ranks:
        gpu = r.gpu
        if gpu is not None:
            notes.append(
                f"rank {r.rank} {gpu.name}: energy from {gpu.energy_source}, "
                f"{gpu.samples} samples, counter wraps {gpu.counter_wraps}, "
                f"resets {gpu.counter_resets}, unsupported fields: {gpu.unsupported or '-'}"
            )
    return notes


def _notes(ranks: list[RankRecord]) -> list[str]:
    notes = _gpu_notes(ranks)
    for note in sorted({r.cpu.energy_note for r in ranks}):
        notes.append(f"CPU energy (RAPL): {note}")
    if any(r.flops_per_step is None for r in ranks):
        notes.append("MFU null: FLOPs per step not recorded (trainer: meter.set_flops_per_step)")
    first = ranks[0]
    notes.append(
        f"step statistics exclude {first.steps.warmup} warm-up step(s) per rank; "
        f"{first.steps.measured} measured"
    )
    return notes


def build_report(
    record: CostRecord, cfg: CostParams, precision: str, rng: np.random.Generator
) -> CostReport:
    """Measured figures, the full-schedule forecast from this run's own steps, and notes."""
    ranks = record.ranks
    slowest = max(ranks, key=lambda r: r.step_s.mean or 0.0)
    forecast_result, note = None, ""
    if slowest.steps.measured == 0:
        note = f"no measured steps (all {slowest.steps.total} steps were warm-up)"
    else:
        sample = StepSample.from_rank(slowest)
        forecast_result = forecast(sample, cfg, rng, gpu_power_w(record.totals))
    measured = summarise(record, cfg, precision)
    peaks = {n: peak_flops(cfg.peak_tflops, n, precision) for n in measured.device_names}
    unknown = [name for name, peak in peaks.items() if peak is None]
    notes = _notes(ranks)
    if unknown:
        notes.append(f"MFU null: no cost.peak_tflops entry ({precision}) matches {unknown}")
    return CostReport(
        measured=measured,
        forecast=forecast_result,
        forecast_note=note,
        conditions=ranks[0].conditions.flat(),
        notes=notes,
    )
