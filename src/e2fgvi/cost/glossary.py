"""Human names, units and groups of the cost record's figures (the reports' table rows).

One name per quantity: the field names are those of ``cost.json``, ``report.json`` and
``train.json``; their definitions are the glossary in docs/cost.md (a test keeps the two and
the record's fields in step).
"""

from __future__ import annotations

from typing import NamedTuple


class Label(NamedTuple):
    group: str
    name: str
    unit: str  # "" for a count or a text


COST, SPEED, MEMORY, RUN = "What it cost", "Speed", "Memory and host", "What ran"
GROUPS = (COST, SPEED, MEMORY, RUN)

LABELS: dict[str, Label] = {
    "wall_h": Label(COST, "Wall time, all sessions", "h"),
    "device_hours": Label(COST, "Device-hours, devices x wall time", "{hours_unit}"),
    "device_hours_per_1k_iter": Label(COST, "Device-hours per 1000 iterations", "{hours_unit}"),
    "money": Label(COST, "Money, total", "{currency}"),
    "money_device_hours": Label(COST, "Money for device-hours", "{currency}"),
    "money_energy": Label(COST, "Money for energy", "{currency}"),
    "energy_kwh": Label(COST, "Energy, total", "kWh"),
    "energy_gpu_kwh": Label(COST, "Energy of the GPUs (NVML)", "kWh"),
    "energy_cpu_kwh": Label(COST, "Energy of the CPU packages (RAPL)", "kWh"),
    "device_power_w": Label(COST, "Mean power per device", "W"),
    "energy_sources": Label(COST, "Energy sources", ""),
    "clips_per_s": Label(SPEED, "Throughput, all devices", "clips/s"),
    "clips_per_s_per_device": Label(SPEED, "Throughput per device", "clips/s"),
    "step_time_median_s": Label(SPEED, "Step time, median", "s"),
    "step_time_p90_s": Label(SPEED, "Step time, 90th percentile", "s"),
    "step_time_mean_s": Label(SPEED, "Step time, mean", "s"),
    "data_wait_median_s": Label(SPEED, "Data wait per step, median", "s"),
    "compute_median_s": Label(SPEED, "Compute per step, median", "s"),
    "flops_per_step": Label(SPEED, "FLOPs per step, all devices", "FLOP"),
    "mfu": Label(SPEED, "Model FLOPs utilisation", "fraction"),
    "peak_allocated_gb": Label(MEMORY, "GPU memory allocated, peak", "GiB"),
    "peak_reserved_gb": Label(MEMORY, "GPU memory reserved, peak", "GiB"),
    "cpu_hours": Label(MEMORY, "CPU time of the training processes", "h"),
    "peak_rss_mb": Label(MEMORY, "Resident memory, peak", "MiB"),
    "meter_overhead_pct": Label(MEMORY, "Meter overhead, share of step time", "%"),
    "meter_overhead_per_step_us": Label(MEMORY, "Meter overhead per step", "µs"),
    "device_names": Label(RUN, "Device names", ""),
    "device_kind": Label(RUN, "Device kind", ""),
    "hours_unit": Label(RUN, "Hours are", ""),
    "devices": Label(RUN, "Devices: GPUs, else training processes", ""),
    "ranks": Label(RUN, "Training processes (ranks)", ""),
    "precision": Label(RUN, "Precision", ""),
    "sessions": Label(RUN, "Sessions: 1 + resumes", ""),
    "steps_total": Label(RUN, "Iterations run, all sessions", ""),
    "steps_measured": Label(RUN, "Steps measured: after warm-up, last session", ""),
    "currency": Label(RUN, "Currency", ""),
}


def heading(label: Label, hours_unit: str, currency: str) -> str:
    """``Name (unit)`` with the run's own hours unit and currency filled in."""
    unit = label.unit.format(hours_unit=hours_unit, currency=currency)
    return f"{label.name} ({unit})" if unit else label.name


def num(value: float) -> str:
    """Three significant digits without an exponent where a reader expects none (0.001–1e6)."""
    size = abs(value)
    if size == 0 or not 1e-3 <= size < 1e6:
        return f"{value:.3g}"
    if size >= 100:
        return f"{value:,.0f}"
    return f"{float(f'{value:.3g}'):g}"
