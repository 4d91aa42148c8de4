"""The cost report: JSON (DVC metrics), Markdown, and PNG plots (matplotlib, Agg, no pyplot)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from e2fgvi.atomic import write_bytes, write_json, write_text

PLOTS = ("step_time.png", "throughput.png", "power.png")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def _band(triple: dict[str, float] | None) -> str:
    if not triple:
        return "null"
    return f"{triple['mean']:.4g} ({triple['low']:.4g} – {triple['high']:.4g})"


def markdown(report: dict[str, Any]) -> str:
    """Human-readable report: measured figures, forecast with band, conditions, notes."""
    measured, fc, cond = report["measured"], report["forecast"], report["conditions"]
    lines = ["# Training cost", "", "## Measured", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in measured.items()]
    lines += ["", "## Forecast for the full schedule", ""]
    if fc is None:
        lines.append(f"Not available: {report.get('forecast_note', '')}")
    else:
        lines += [
            f"{fc['iterations']} iterations, global batch {fc['global_batch']} on {fc['gpus']} "
            f"GPUs ({fc['clips_per_gpu']} clips per GPU), from {fc['steps_measured']} measured "
            f"steps at {fc['measured_clips_per_gpu']} clips per device. Band: {fc['band']}.",
            "",
            "| figure | mean (low – high) |",
            "| --- | --- |",
            f"| step time (s) | {_band(fc['step_s'])} |",
            f"| wall time (h) | {_band(fc['wall_h'])} |",
            f"| GPU-hours | {_band(fc['gpu_hours'])} |",
            f"| GPU energy (kWh) | {_band(fc['energy_kwh'])} |",
            f"| money ({fc['currency']}) | {_band(fc['money'])} |",
            "",
            "Assumptions:",
            *[f"- {a}" for a in fc["assumptions"]],
        ]
    loader = report.get("loader") or {}
    if loader.get("workers_per_gpu") is not None:
        lines += [
            "",
            f"Loader: one worker reads {loader['clips_per_s_per_worker']:.2f} clips/s "
            f"({loader['clip']}, decode {loader['decode']}); one GPU needs "
            f"{loader['clips_per_s_needed_per_gpu']:.2f} clips/s, i.e. "
            f"**{loader['workers_per_gpu']} loader worker(s)** ({loader['derivation']}).",
        ]
    lines += ["", "## Conditions", "", "| condition | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in cond.items()]
    lines += ["", "## Notes", "", *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def _save(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


def _columns(series: dict[str, Any], *names: str) -> list[list[float | None]]:
    index = [series["fields"].index(n) for n in names]
    return [[row[i] for row in series["rows"]] for i in index]


def plot_step_time(ranks: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for rank in ranks:
        step, total, data, compute = _columns(
            rank["series"], "step", "step_s", "data_s", "compute_s"
        )
        tag = f"rank {rank['rank']} " if len(ranks) > 1 else ""
        ax.plot(step, total, label=f"{tag}step")
        ax.plot(step, compute, label=f"{tag}compute", linestyle="--")
        ax.plot(step, data, label=f"{tag}data wait", linestyle=":")
        warm = rank["warmup_step_s"]
        first = rank["steps"]["first_measured"] or len(warm)
        ax.scatter(
            range(first - len(warm), first), warm, marker="x", label=f"{tag}warm-up (excluded)"
        )
    stats = ranks[0]["step_s"]
    if stats["median"] is not None:
        ax.axhline(stats["median"], color="grey", linewidth=0.8, label="median")
        ax.axhline(stats["p90"], color="grey", linewidth=0.8, linestyle="--", label="p90")
    ax.set(xlabel="iteration", ylabel="seconds per step", title="Step time")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_throughput(ranks: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for rank in ranks:
        step, total = _columns(rank["series"], "step", "step_s")
        rate = [rank["clips_per_step"] / t if t else None for t in total]
        ax.plot(step, rate, label=f"rank {rank['rank']} ({rank['device_name']})")
    ax.set(xlabel="iteration", ylabel="clips per second", title="Throughput per device")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_power(ranks: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    gpus = [r for r in ranks if r["gpu"] is not None]
    for rank in gpus:
        t, power = _columns(rank["gpu"]["timeline"], "t_s", "power_w")
        ax.plot(t, power, label=f"rank {rank['rank']} {rank['gpu']['name']}")
    if gpus:
        ax.set(xlabel="seconds since start", ylabel="GPU power (W)", title="GPU power")
        ax.legend(fontsize="small")
    else:
        note = ranks[0]["gpu_note"] if ranks else "no record"
        ax.text(0.5, 0.5, f"No GPU power sampled:\n{note}", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    _save(fig, path)


def write_report(out: Path, report: dict[str, Any], ranks: list[dict[str, Any]]) -> list[Path]:
    """Write cost.json, cost.md and the plots into ``out``; returns the written paths."""
    paths = [out / "cost.json", out / "cost.md", *(out / name for name in PLOTS)]
    write_json(paths[0], report)
    write_text(paths[1], markdown(report))
    plot_step_time(ranks, paths[2])
    plot_throughput(ranks, paths[3])
    plot_power(ranks, paths[4])
    return paths
