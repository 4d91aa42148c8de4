"""What a measured run cost: device-hours, energy, money, throughput, MFU (pure functions).

Device-hours are hours of the device kind that ran (``device_kind``: ``cuda`` or ``cpu``); a
figure is called GPU-hours only when a GPU ran (``forecast.hours_unit``).
"""

from __future__ import annotations

import numpy as np

from e2fgvi.config import CostParams
from e2fgvi.cost.forecast import (
    Forecast,
    Schedule,
    StepSample,
    forecast,
    forecast_metrics,
    hours_unit,
    price_per_device_hour,
)
from e2fgvi.cost.mfu import mfu, peak_flops
from e2fgvi.measure.record import CostRecord, FrozenModel, RankRecord, Scalar, Totals
from e2fgvi.measure.totals import sum_or_none

_J_PER_KWH = 3.6e6


class Sessions(FrozenModel):
    """Time, device-seconds, energy and CPU time summed over a resumed experiment's sessions."""

    sessions: int
    wall_s: float
    device_s: float
    gpu_energy_j: float | None
    cpu_energy_j: float | None
    steps_total: int
    cpu_time_s: float


class RunCost(FrozenModel):
    """The measured figures of the report (``cost/…`` metrics; None: not measured here)."""

    device_names: list[str]
    device_kind: str
    hours_unit: str
    devices: int
    ranks: int
    precision: str
    sessions: int
    wall_h: float
    steps_total: int
    steps_measured: int
    device_hours: float
    device_hours_per_1k_iter: float | None
    energy_gpu_kwh: float | None
    energy_cpu_kwh: float | None
    energy_kwh: float | None
    energy_sources: list[str]
    device_power_w: float | None
    money: float
    money_device_hours: float
    money_energy: float | None
    currency: str
    step_time_median_s: float | None
    step_time_p90_s: float | None
    step_time_mean_s: float | None
    data_wait_median_s: float | None
    compute_median_s: float | None
    clips_per_s: float | None
    clips_per_s_per_device: float | None
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

    measured: RunCost
    forecast: Forecast | None
    forecast_note: str
    conditions: dict[str, Scalar]
    notes: list[str]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def device_kind(ranks: list[RankRecord]) -> str:
    """``cuda`` when the ranks held GPUs (the meter counted them), else their device type."""
    if any(r.conditions.gpu_count for r in ranks):
        return "cuda"
    return ranks[0].device_type


def devices(totals: Totals) -> int:
    """The devices a session held: its GPUs, else one per rank (a CPU process is one device)."""
    return totals.gpus or totals.ranks


def device_power_w(totals: Totals) -> float | None:
    """Mean power per device over the session: NVML energy per GPU, else RAPL per rank."""
    energy = totals.gpu_energy_j if totals.gpus else totals.cpu_energy_j
    return _ratio(energy, totals.wall_s * devices(totals))


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
        device_s=sum(t.wall_s * devices(t) for t in sessions),
        gpu_energy_j=sum_or_none([t.gpu_energy_j for t in sessions]),
        cpu_energy_j=sum_or_none([t.cpu_energy_j for t in sessions]),
        steps_total=sum(t.steps_total for t in sessions),
        cpu_time_s=sum(t.cpu_time_s for t in sessions),
    )


def _money(device_hours: float, energy_kwh: float | None, price_per_hour: float, cfg) -> dict:
    money_devices = device_hours * price_per_hour
    money_energy = energy_kwh * cfg.price_per_kwh if energy_kwh is not None else None
    return {
        "money": money_devices + (money_energy or 0.0),
        "money_device_hours": money_devices,
        "money_energy": money_energy,
    }


def summarise(record: CostRecord, cfg: CostParams, precision: str) -> RunCost:
    """Cost figures of a gathered record (all its sessions) under ``cfg``'s prices and peaks."""
    totals = record.totals
    kind = device_kind(record.ranks)
    overall = all_sessions(totals, record.previous_sessions)
    device_hours = overall.device_s / 3600.0
    energy = _energy(overall)
    step_s = totals.step_s_mean
    steady_h = step_s * devices(totals) / 3600.0 if step_s else None
    overhead = totals.overhead_fraction
    price = price_per_device_hour(cfg, kind)
    return RunCost(
        device_names=totals.device_names,
        device_kind=kind,
        hours_unit=hours_unit(kind),
        devices=devices(totals),
        ranks=totals.ranks,
        precision=precision,
        sessions=overall.sessions,
        wall_h=overall.wall_s / 3600.0,
        steps_total=overall.steps_total,
        steps_measured=totals.steps_measured,
        device_hours=device_hours,
        device_hours_per_1k_iter=steady_h * 1000 if steady_h is not None else None,
        **energy,
        energy_sources=totals.energy_sources,
        device_power_w=device_power_w(totals),
        **_money(device_hours, energy["energy_kwh"], price, cfg),
        currency=cfg.currency,
        step_time_median_s=totals.step_s_median,
        step_time_p90_s=totals.step_s_p90,
        step_time_mean_s=totals.step_s_mean,
        data_wait_median_s=totals.data_wait_s_median,
        compute_median_s=totals.compute_s_median,
        clips_per_s=totals.clips_per_s,
        clips_per_s_per_device=_ratio(totals.clips_per_s, devices(totals)),
        flops_per_step=totals.flops_per_step,
        mfu=mfu(totals, record.ranks, precision),
        peak_allocated_gb=totals.peak_allocated_gb,
        peak_reserved_gb=totals.peak_reserved_gb,
        cpu_hours=overall.cpu_time_s / 3600.0,
        peak_rss_mb=totals.peak_rss_mb,
        meter_overhead_pct=100 * overhead if overhead is not None else None,
        meter_overhead_per_step_us=totals.overhead_per_step_us,
    )


METRIC_KEYS = (
    "devices", "wall_h", "device_hours", "device_hours_per_1k_iter", "energy_kwh",
    "energy_gpu_kwh", "energy_cpu_kwh", "device_power_w", "money", "step_time_median_s",
    "step_time_p90_s", "data_wait_median_s", "compute_median_s", "clips_per_s",
    "clips_per_s_per_device", "flops_per_step", "mfu", "peak_allocated_gb", "peak_reserved_gb",
    "cpu_hours", "peak_rss_mb", "meter_overhead_pct", "sessions", "steps_total", "steps_measured",
)  # fmt: skip


def summary_metrics(measured: RunCost) -> dict[str, float | None]:
    """The measured figures as flat numbers (None: not measured here)."""
    return {key: getattr(measured, key) for key in METRIC_KEYS}


def report_metrics(report: CostReport) -> dict[str, float | int | None]:
    """The report's numbers, flat: the DVC metrics file and (``cost/``-prefixed) MLflow."""
    metrics = summary_metrics(report.measured)
    if report.forecast is not None:
        metrics.update(forecast_metrics(report.forecast))
    return metrics


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
    record: CostRecord,
    cfg: CostParams,
    precision: str,
    rng: np.random.Generator,
    schedule: Schedule | None = None,
) -> CostReport:
    """Measured figures, notes, and a forecast only of what did not run.

    A run that finished ``schedule`` (or, without one, any run) is reported as measured: its
    figures are what it cost, not a forecast. A run that stopped before ``schedule.iterations``
    also gets the forecast of the whole schedule from its own steps.
    """
    ranks = record.ranks
    slowest = max(ranks, key=lambda r: r.step_s.mean or 0.0)
    measured = summarise(record, cfg, precision)
    forecast_result, note = None, ""
    if schedule is None or measured.steps_total >= schedule.iterations:
        note = (
            f"the run finished its schedule ({measured.steps_total} iterations): every figure "
            "is measured, none forecast"
        )
    elif slowest.steps.measured == 0:
        note = f"no measured steps (all {slowest.steps.total} steps were warm-up)"
    else:
        sample = StepSample.from_rank(slowest)
        forecast_result = forecast(
            sample,
            cfg,
            rng,
            schedule,
            measured.device_kind,
            measured_devices=measured.devices,
            power_w=measured.device_power_w,
        )
    peaks = {n: peak_flops(n, precision) for n in measured.device_names}
    unknown = [name for name, peak in peaks.items() if peak is None]
    notes = _notes(ranks)
    if unknown:
        notes.append(f"MFU null: no device-table peak ({precision}) matches {unknown}")
    return CostReport(
        measured=measured,
        forecast=forecast_result,
        forecast_note=note,
        conditions=ranks[0].conditions.flat(),
        notes=notes,
    )
