"""What a measured run cost: GPU-hours, energy, money, throughput, MFU (pure functions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from e2fgvi.config import CostParams
from e2fgvi.cost.forecast import StepSample, forecast
from e2fgvi.cost.mfu import peak_flops
from e2fgvi.measure.record import sum_or_none

_J_PER_KWH = 3.6e6


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _mfu(totals: dict[str, Any], ranks: list[dict[str, Any]], cfg: CostParams, precision: str):
    """Achieved FLOP/s over the devices' summed dense peak; None when any peak is unknown."""
    peaks = [peak_flops(cfg.peak_tflops, r["device_name"], precision) for r in ranks]
    step_s = totals["step_s_mean"]
    if not step_s or not peaks or any(p is None for p in peaks):
        return None
    return _ratio(totals["flops_per_step"], step_s * sum(peaks))


def gpu_power_w(totals: dict[str, Any]) -> float | None:
    """Mean power per GPU over the whole run (energy over wall time)."""
    if not totals["gpus"]:
        return None
    return _ratio(totals["gpu_energy_j"], totals["wall_s"] * totals["gpus"])


def _energy(totals: dict[str, Any]) -> dict[str, float | None]:
    gpu = _ratio(totals["gpu_energy_j"], _J_PER_KWH)
    cpu = _ratio(totals["cpu_energy_j"], _J_PER_KWH)
    known = [e for e in (gpu, cpu) if e is not None]
    return {
        "energy_gpu_kwh": gpu,
        "energy_cpu_kwh": cpu,
        "energy_kwh": sum(known) if known else None,
    }


def all_sessions(totals: dict[str, Any], previous: list[dict[str, Any]]) -> dict[str, Any]:
    """Time, GPU-seconds, energy and CPU time summed over a resumed experiment's sessions.

    ``previous`` holds the totals of the earlier (interrupted or shorter) sessions; each counts
    up to its last checkpoint snapshot. Step statistics stay those of the latest session.
    """
    sessions = [*previous, totals]
    return {
        "sessions": len(sessions),
        "wall_s": sum(t["wall_s"] for t in sessions),
        "gpu_s": sum(t["wall_s"] * t["gpus"] for t in sessions),
        "gpu_energy_j": sum_or_none([t["gpu_energy_j"] for t in sessions]),
        "cpu_energy_j": sum_or_none([t["cpu_energy_j"] for t in sessions]),
        "steps_total": sum(t["steps_total"] for t in sessions),
        "cpu_time_s": sum(t["cpu_time_s"] for t in sessions),
    }


def summarise(gathered: dict[str, Any], cfg: CostParams, precision: str) -> dict[str, Any]:
    """Cost figures of a gathered record (all its sessions) under ``cfg``'s prices and peaks."""
    totals, ranks = gathered["totals"], gathered["ranks"]
    gpus = totals["gpus"]
    overall = all_sessions(totals, gathered.get("previous_sessions", []))
    gpu_hours = overall["gpu_s"] / 3600.0 if gpus else None
    energy = _energy(overall)
    money_gpu = gpu_hours * cfg.price_per_gpu_hour if gpu_hours is not None else None
    money_energy = (
        energy["energy_kwh"] * cfg.price_per_kwh if energy["energy_kwh"] is not None else None
    )
    parts = [m for m in (money_gpu, money_energy) if m is not None]
    steady_gpu_h = totals["step_s_mean"] * gpus / 3600.0 if gpus and totals["step_s_mean"] else None
    return {
        "device_names": totals["device_names"],
        "gpus": gpus,
        "ranks": totals["ranks"],
        "precision": precision,
        "sessions": overall["sessions"],
        "wall_h": overall["wall_s"] / 3600.0,
        "steps_total": overall["steps_total"],
        "steps_measured": totals["steps_measured"],
        "gpu_hours": gpu_hours,
        "gpu_hours_per_1k_iter": steady_gpu_h * 1000 if steady_gpu_h is not None else None,
        **energy,
        "energy_sources": totals["energy_sources"],
        "gpu_power_w": gpu_power_w(totals),
        "money": sum(parts) if parts else None,
        "money_gpu_hours": money_gpu,
        "money_energy": money_energy,
        "currency": cfg.currency,
        "step_time_median_s": totals["step_s_median"],
        "step_time_p90_s": totals["step_s_p90"],
        "step_time_mean_s": totals["step_s_mean"],
        "data_wait_median_s": totals["data_wait_s_median"],
        "compute_median_s": totals["compute_s_median"],
        "clips_per_s": totals["clips_per_s"],
        "clips_per_s_per_gpu": _ratio(totals["clips_per_s"], gpus),
        "clips_per_s_per_rank": _ratio(totals["clips_per_s"], totals["ranks"]),
        "flops_per_step": totals["flops_per_step"],
        "mfu": _mfu(totals, ranks, cfg, precision),
        "peak_allocated_gb": totals["peak_allocated_gb"],
        "peak_reserved_gb": totals["peak_reserved_gb"],
        "cpu_hours": overall["cpu_time_s"] / 3600.0,
        "peak_rss_mb": totals["peak_rss_mb"],
        "meter_overhead_pct": (
            100 * totals["overhead_fraction"] if totals["overhead_fraction"] is not None else None
        ),
        "meter_overhead_per_step_us": totals["overhead_per_step_us"],
    }


METRIC_KEYS = (
    "gpus", "wall_h", "gpu_hours", "gpu_hours_per_1k_iter", "energy_kwh", "energy_gpu_kwh",
    "energy_cpu_kwh", "gpu_power_w", "money", "step_time_median_s", "step_time_p90_s",
    "data_wait_median_s", "compute_median_s", "clips_per_s", "clips_per_s_per_gpu", "mfu",
    "peak_allocated_gb", "peak_reserved_gb", "cpu_hours", "peak_rss_mb", "meter_overhead_pct",
    "sessions",
)  # fmt: skip


def summary_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """``cost/…`` metrics for MLflow; None marks a figure not measured here."""
    return {f"cost/{key}": summary[key] for key in METRIC_KEYS}


def _notes(ranks: list[dict[str, Any]]) -> list[str]:
    notes = []
    for note in sorted({r["gpu_note"] for r in ranks}):
        notes.append("GPU sampling (NVML): " + ("on" if note == "ok" else note))
    for r in ranks:
        gpu = r["gpu"]
        if gpu is not None:
            notes.append(
                f"rank {r['rank']} {gpu['name']}: energy from {gpu['energy_source']}, "
                f"{gpu['samples']} samples, counter wraps {gpu['counter_wraps']}, "
                f"resets {gpu['counter_resets']}, unsupported fields: {gpu['unsupported'] or '-'}"
            )
    for note in sorted({r["cpu"]["energy_note"] for r in ranks}):
        notes.append(f"CPU energy (RAPL): {note}")
    if any(r["flops_per_step"] is None for r in ranks):
        notes.append("MFU null: FLOPs per step not recorded (trainer: meter.set_flops_per_step)")
    first = ranks[0]
    notes.append(
        f"step statistics exclude {first['steps']['warmup']} warm-up step(s) per rank; "
        f"{first['steps']['measured']} measured"
    )
    return notes


def build_report(
    gathered: dict[str, Any], cfg: CostParams, precision: str, rng: np.random.Generator
) -> dict[str, Any]:
    """Measured figures, the full-schedule forecast from this run's own steps, and notes."""
    ranks = gathered["ranks"]
    slowest = max(ranks, key=lambda r: r["step_s"]["mean"] or 0.0)
    forecast_result, note = None, ""
    if slowest["steps"]["measured"] == 0:
        note = f"no measured steps (all {slowest['steps']['total']} steps were warm-up)"
    else:
        sample = StepSample.from_rank(slowest)
        forecast_result = forecast(sample, cfg, rng, gpu_power_w(gathered["totals"]))
    measured = summarise(gathered, cfg, precision)
    unknown = [
        n for n in measured["device_names"] if peak_flops(cfg.peak_tflops, n, precision) is None
    ]
    notes = _notes(ranks)
    if unknown:
        notes.append(f"MFU null: no cost.peak_tflops entry ({precision}) matches {unknown}")
    return {
        "measured": measured,
        "forecast": forecast_result,
        "forecast_note": note,
        "conditions": ranks[0]["conditions"],
        "notes": notes,
    }
