"""The cost report: flat numbers (DVC metrics), the whole report, Markdown, and data plots.

``cost.json`` holds numbers only, so ``dvc metrics show`` / ``dvc exp show`` list figures, not
prose; ``report.json`` and ``cost.md`` hold everything (conditions, notes, assumptions). The
series (step time, throughput, power) are CSV data plots, so ``dvc plots diff`` overlays runs.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from e2fgvi.atomic import write_json, write_text
from e2fgvi.cost.forecast import Band, Forecast, kind_label
from e2fgvi.cost.summary import CostReport, report_metrics
from e2fgvi.measure.record import RankRecord

PLOTS = ("step_time.csv", "throughput.csv", "power.csv")


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


def forecast_lines(fc: Forecast) -> list[str]:
    """The forecast as Markdown: what was forecast from what, the figures, how it was derived."""
    unit = fc.hours_unit
    lines = [
        f"{fc.iterations} iterations, global batch {fc.global_batch} on {fc.devices} "
        f"{kind_label(fc.device_kind)} device(s) "
        f"({fc.clips_per_device} clips per device), from {fc.steps_measured} measured steps on "
        f"{fc.measured_devices} device(s) at {_fmt(fc.measured_clips_per_device)} clips per "
        f"device. Band: {fc.band}.",
        "",
        "| figure | mean (low – high) |",
        "| --- | --- |",
        f"| step time (s) | {_band(fc.step_s)} |",
        f"| wall time (h) | {_band(fc.wall_h)} |",
        f"| {unit} | {_band(fc.device_hours)} |",
        f"| energy (kWh) | {_band(fc.energy_kwh)} |",
        f"| money ({fc.currency}) | {_band(fc.money)} |",
        "",
    ]
    if fc.derivation:
        lines += ["Derived, not measured:", *[f"- {step}" for step in fc.derivation], ""]
    else:
        lines += ["Every figure comes from the measured configuration itself.", ""]
    return [*lines, "Assumptions:", *[f"- {a}" for a in fc.assumptions]]


def markdown(report: CostReport) -> str:
    """Human-readable report: measured figures, forecast with band, conditions, notes."""
    fc = report.forecast
    lines = ["# Training cost", "", "## Measured", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in report.measured.model_dump().items()]
    lines += ["", "## Forecast of the run's schedule", ""]
    if fc is None:
        lines.append(f"Not available: {report.forecast_note}")
    else:
        lines += forecast_lines(fc)
    lines += ["", "## Conditions", "", "| condition | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in report.conditions.items()]
    lines += ["", "## Notes", "", *[f"- {note}" for note in report.notes], ""]
    return "\n".join(lines)


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    write_text(path, buffer.getvalue())


def step_series(ranks: list[RankRecord]) -> list[list[float | None]]:
    """The slowest rank's measured steps (DDP steps end together): step, total, compute, data."""
    slowest = max(ranks, key=lambda r: r.step_s.mean or 0.0)
    step, total, compute, data = (
        slowest.series.column(name) for name in ("step", "step_s", "compute_s", "data_s")
    )
    return [list(row) for row in zip(step, total, compute, data, strict=True)]


def write_plots(out: Path, ranks: list[RankRecord]) -> list[Path]:
    """The cost series as DVC data plots (CSV; dvc.yaml's top-level plots give x and y).

    ``step_time.csv``: step, step_s, compute_s, data_s (the slowest rank's measured steps);
    ``throughput.csv``: step, step_clips_per_s (all ranks' clips over the slowest rank's step time);
    ``power.csv``: t_s, power_w (rank 0's GPU as NVML sampled it; no rows without a GPU).
    """
    paths = [out / name for name in PLOTS]
    steps = step_series(ranks)
    _csv(paths[0], ["step", "step_s", "compute_s", "data_s"], steps)
    clips = sum(r.clips_per_step for r in ranks)
    rate = [[row[0], clips / row[1] if row[1] else None] for row in steps]
    _csv(paths[1], ["step", "step_clips_per_s"], rate)
    gpu = ranks[0].gpu
    power = (
        [list(p) for p in zip(*(gpu.timeline.column(c) for c in ("t_s", "power_w")), strict=True)]
        if gpu
        else []
    )
    _csv(paths[2], ["t_s", "power_w"], power)
    return paths


def write_report(out: Path, report: CostReport, ranks: list[RankRecord]) -> list[Path]:
    """cost.json (flat numbers: DVC metrics), report.json (everything), cost.md and the plots."""
    paths = [out / "cost.json", out / "report.json", out / "cost.md"]
    write_json(paths[0], report_metrics(report))
    write_json(paths[1], report.model_dump(mode="json"))
    write_text(paths[2], markdown(report))
    return [*paths, *write_plots(out, ranks)]
