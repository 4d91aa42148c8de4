"""The cost report: JSON (DVC metrics), Markdown, and PNG plots (matplotlib, Agg, no pyplot)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from e2fgvi.atomic import write_bytes, write_json, write_text
from e2fgvi.cost.forecast import Band
from e2fgvi.cost.summary import CostReport
from e2fgvi.measure.record import RankRecord, Series

PLOTS = ("step_time.png", "throughput.png", "power.png")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def _band(band: Band | None) -> str:
    if band is None:
        return "null"
    return f"{band.mean:.4g} ({band.low:.4g} – {band.high:.4g})"


def markdown(report: CostReport) -> str:
    """Human-readable report: measured figures, forecast with band, conditions, notes."""
    fc = report.forecast
    lines = ["# Training cost", "", "## Measured", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in report.measured.model_dump().items()]
    lines += ["", "## Forecast for the full schedule", ""]
    if fc is None:
        lines.append(f"Not available: {report.forecast_note}")
    else:
        lines += [
            f"{fc.iterations} iterations, global batch {fc.global_batch} on {fc.gpus} "
            f"GPUs ({fc.clips_per_gpu} clips per GPU), from {fc.steps_measured} measured "
            f"steps at {_fmt(fc.measured_clips_per_gpu)} clips per device. Band: {fc.band}.",
            "",
            "| figure | mean (low – high) |",
            "| --- | --- |",
            f"| step time (s) | {_band(fc.step_s)} |",
            f"| wall time (h) | {_band(fc.wall_h)} |",
            f"| GPU-hours | {_band(fc.gpu_hours)} |",
            f"| GPU energy (kWh) | {_band(fc.energy_kwh)} |",
            f"| money ({fc.currency}) | {_band(fc.money)} |",
            "",
            "Assumptions:",
            *[f"- {a}" for a in fc.assumptions],
        ]
    lines += ["", "## Conditions", "", "| condition | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in report.conditions.items()]
    lines += ["", "## Notes", "", *[f"- {note}" for note in report.notes], ""]
    return "\n".join(lines)


def _save(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


def _columns(series: Series, *names: str) -> list[list[float | None]]:
    return [series.column(name) for name in names]


def plot_step_time(ranks: list[RankRecord], path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for rank in ranks:
        step, total, data, compute = _columns(rank.series, "step", "step_s", "data_s", "compute_s")
        tag = f"rank {rank.rank} " if len(ranks) > 1 else ""
        ax.plot(step, total, label=f"{tag}step")
        ax.plot(step, compute, label=f"{tag}compute", linestyle="--")
        ax.plot(step, data, label=f"{tag}data wait", linestyle=":")
        warm = rank.warmup_step_s
        first = rank.steps.first_measured or len(warm)
        ax.scatter(
            range(first - len(warm), first), warm, marker="x", label=f"{tag}warm-up (excluded)"
        )
    stats = ranks[0].step_s
    if stats.median is not None:
        ax.axhline(stats.median, color="grey", linewidth=0.8, label="median")
        ax.axhline(stats.p90, color="grey", linewidth=0.8, linestyle="--", label="p90")
    ax.set(xlabel="iteration", ylabel="seconds per step", title="Step time")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_throughput(ranks: list[RankRecord], path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for rank in ranks:
        step, total = _columns(rank.series, "step", "step_s")
        rate = [rank.clips_per_step / t if t else None for t in total]
        ax.plot(step, rate, label=f"rank {rank.rank} ({rank.device_name})")
    ax.set(xlabel="iteration", ylabel="clips per second", title="Throughput per device")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_power(ranks: list[RankRecord], path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    gpus = [(r, r.gpu) for r in ranks if r.gpu is not None]
    for rank, gpu in gpus:
        t, power = _columns(gpu.timeline, "t_s", "power_w")
        ax.plot(t, power, label=f"rank {rank.rank} {gpu.name}")
    if gpus:
        ax.set(xlabel="seconds since start", ylabel="GPU power (W)", title="GPU power")
        ax.legend(fontsize="small")
    else:
        note = ranks[0].gpu_note if ranks else "no record"
        ax.text(0.5, 0.5, f"No GPU power sampled:\n{note}", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    _save(fig, path)


def write_report(out: Path, report: CostReport, ranks: list[RankRecord]) -> list[Path]:
    """Write cost.json, cost.md and the plots into ``out``; returns the written paths."""
    paths = [out / "cost.json", out / "cost.md", *(out / name for name in PLOTS)]
    write_json(paths[0], report.model_dump(mode="json"))
    write_text(paths[1], markdown(report))
    plot_step_time(ranks, paths[2])
    plot_throughput(ranks, paths[3])
    plot_power(ranks, paths[4])
    return paths
