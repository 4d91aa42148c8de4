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
from e2fgvi.cost.glossary import GROUPS, LABELS, heading, num
from e2fgvi.cost.summary import CostReport, RunCost, report_metrics
from e2fgvi.measure.record import RankRecord

PLOTS = ("step_time.csv", "throughput.csv", "power.csv")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def _band(band: Band | None) -> str:
    if band is None:
        return "not measured"
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
        "| Figure | Mean (low – high) |",
        "| --- | --- |",
        f"| Step time (s) | {_band(fc.step_s)} |",
        f"| Wall time (h) | {_band(fc.wall_h)} |",
        f"| Device-hours ({unit}) | {_band(fc.device_hours)} |",
        f"| Energy (kWh) | {_band(fc.energy_kwh)} |",
        f"| Money ({fc.currency}) | {_band(fc.money)} |",
        "",
    ]
    if fc.derivation:
        lines += ["Derived, not measured:", *[f"- {step}" for step in fc.derivation], ""]
    else:
        lines += ["Every figure comes from the measured configuration itself.", ""]
    return [*lines, "Assumptions:", *[f"- {a}" for a in fc.assumptions]]


def _money_sentence(m: RunCost) -> str:
    energy = (
        f"{num(m.energy_kwh)} kWh of energy measured ({', '.join(m.energy_sources) or 'RAPL'})"
        if m.energy_kwh is not None
        else "energy not measured on this machine, so not priced"
    )
    return (
        f"It cost {num(m.money)} {m.currency}: {num(m.device_hours)} {m.hours_unit} at the "
        f"configured price, {energy}."
    )


def summary_lines(report: CostReport) -> list[str]:
    """The two or three sentences that answer "what did this run cost"."""
    m = report.measured
    names = ", ".join(m.device_names)
    lines = [
        f"This run trained {m.steps_total} iterations on {m.devices} {kind_label(m.device_kind)} "
        f"device(s) ({names}, {m.precision}) in {num(m.wall_h * 60)} min of wall time"
        + (f" over {m.sessions} sessions." if m.sessions > 1 else "."),
        _money_sentence(m),
    ]
    if m.clips_per_s is not None and m.step_time_median_s is not None:
        lines.append(
            f"It trained {num(m.clips_per_s)} clips/s over its {m.steps_measured} measured steps "
            f"(median step {num(m.step_time_median_s)} s)."
        )
    fc = report.forecast
    if fc is not None:
        lines.append(
            f"It stopped before its schedule: all {fc.iterations} iterations would take "
            f"{num(fc.wall_h.mean)} h ({num(fc.wall_h.low)}–{num(fc.wall_h.high)}) and cost "
            f"{num(fc.money.mean)} {fc.currency} (forecast, below)."
        )
    return [" ".join(lines), ""]


def figure_tables(m: RunCost) -> list[str]:
    """The measured figures, grouped, one row per figure with its unit in the heading."""
    values = m.model_dump()
    lines = []
    for group in GROUPS:
        lines += [f"### {group}", "", "| Figure (unit) | Value |", "| --- | --- |"]
        for key, label in LABELS.items():
            if label.group == group:
                lines.append(
                    f"| {heading(label, m.hours_unit, m.currency)} | {_fmt(values[key])} |"
                )
        lines.append("")
    return lines


def markdown(report: CostReport) -> str:
    """The report for people: the answer, grouped figures, forecast, conditions, notes."""
    fc = report.forecast
    lines = ["# What this training run cost", "", *summary_lines(report)]
    lines += ["## Measured", "", *figure_tables(report.measured)]
    lines += ["Definitions of every figure: docs/cost.md, section Glossary.", ""]
    if fc is not None:
        lines += ["## Forecast of the rest of the schedule", "", *forecast_lines(fc), ""]
    else:
        lines += [f"No forecast: {report.forecast_note}.", ""]
    lines += ["## Conditions", "", "| Condition | Value |", "| --- | --- |"]
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
