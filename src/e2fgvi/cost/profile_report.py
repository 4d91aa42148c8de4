"""The report of ``e2fgvi profile``: the plan beside what was measured, forecast, budget table.

Written as ``profile.json`` (flat numbers: DVC metrics), ``report.json`` (everything) and
``profile.md``; logged as its own MLflow run (tag ``cost.kind=profile``) whose params put the
plan's step (``plan.…``) and the measured one (``measured.…``) side by side.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydantic import Field

from e2fgvi.atomic import write_json, write_text
from e2fgvi.config import CostParams
from e2fgvi.cost import budget
from e2fgvi.cost.forecast import Forecast, StepSample, forecast, forecast_metrics, hours_unit
from e2fgvi.cost.glossary import num
from e2fgvi.cost.plan import Difference, Plan, StepShape, differences
from e2fgvi.cost.report import forecast_lines
from e2fgvi.cost.summary import RunCost, device_kind
from e2fgvi.cost.switches import SwitchReport, markdown_lines
from e2fgvi.measure.record import FrozenModel, RankRecord, Scalar

log = logging.getLogger(__name__)

SYNTHETIC_NOTE = (
    "steps run on a fixed synthetic batch of the plan's shape: compute only, no data loading "
    "(the train stage's own record includes the data wait)"
)


WINDOW_NOTE = (
    "the measuring window (cost.forecast.profile_warmup, profile_steps), prices and hardware peaks "
    "are params.yaml's cost section, not the plan's: they describe this machine and your account, "
    "not what you plan to train"
)


class ProbedSize(FrozenModel):
    clips: int
    fits: bool
    peak_reserved_gb: float


class MemoryProbe(FrozenModel):
    """The largest clips per device whose training step fits, and every size tried."""

    max_clips_per_device: int | None
    limit: int
    probed: list[ProbedSize]
    total_gb: float | None = None
    note: str


class Measurement(FrozenModel):
    """One precision's profiling window: the step that ran, its figures, the meter's record."""

    step: StepShape
    summary: RunCost
    memory: MemoryProbe
    derivation: list[str]
    record: RankRecord


class ProfileReport(FrozenModel):
    """The plan, what was measured for it, its forecast and budget table, conditions, notes."""

    plan: Plan
    device_kind: str
    device_name: str
    hours_unit: str
    measurements: list[Measurement]
    differences: list[Difference]
    forecast: Forecast | None
    forecast_note: str
    budget: list[budget.BudgetRow]
    conditions: dict[str, Scalar]
    notes: list[str]
    other_devices: list[str] = Field(default_factory=list)  # the plan per kind (profile_devices)

    switches: SwitchReport | None = None  # cost.switches, timed on this device


def _budget_input(m: Measurement) -> budget.MeasuredSteps:
    return budget.MeasuredSteps(
        precision=m.step.precision,
        sample=StepSample.from_rank(m.record),
        device_kind=m.summary.device_kind,
        power_w=m.summary.device_power_w,
        max_clips_per_device=m.memory.max_clips_per_device,
        derivation=tuple(m.derivation),
    )


def _notes(primary: Measurement) -> list[str]:
    notes = [SYNTHETIC_NOTE, WINDOW_NOTE]
    kind = primary.summary.device_kind
    if kind != "cuda":
        notes.append(
            f"no GPU ran: every hour here is a {hours_unit(kind)[:-1]} of this machine; the plan's "
            "devices are assumed to be like it. Run `e2fgvi profile` on the GPU you will train on"
        )
    notes.append(primary.memory.note)
    return notes


def assemble(
    plan: Plan, measurements: list[Measurement], cfg: CostParams, rng: np.random.Generator
) -> ProfileReport:
    """The report from measured windows (the first is the primary one): forecast, budget."""
    primary = measurements[0]
    kind = device_kind([primary.record])
    inputs = [_budget_input(m) for m in measurements]
    forecast_result, note = None, ""
    if primary.record.steps.measured == 0:
        note = "no measured steps (all were warm-up)"
    else:
        first = inputs[0]
        forecast_result = forecast(
            first.sample,
            cfg,
            rng,
            plan.schedule,
            kind,
            power_w=first.power_w,
            derivation=first.derivation,
        )
    table = budget.budget_table([i for i in inputs if i.sample.means], plan.schedule, cfg, rng)
    device = primary.record.device_name
    return ProfileReport(
        plan=plan,
        device_kind=kind,
        device_name=device,
        hours_unit=hours_unit(kind),
        measurements=measurements,
        differences=differences(plan, primary.step, 1, device),
        forecast=forecast_result,
        forecast_note=note,
        budget=table,
        conditions=_conditions(primary),
        notes=_notes(primary),
    )


def _conditions(primary: Measurement) -> dict[str, Scalar]:
    """The meter's conditions and the step's switches; the FLOP-counting step was warm-up too."""
    record = primary.record
    warmup = record.steps.warmup + 1
    keys = ("precision", "cudnn_benchmark", "channels_last", "compile", "deterministic")
    return {
        **record.conditions.flat(),
        "warmup_steps": warmup,
        "warmup_excluded": warmup,
        "warmup_note": "the first warm-up step counts FLOPs",
        **{key: getattr(primary.step, key) for key in keys},
    }


MEASURED_KEYS = (
    "step_time_median_s",
    "step_time_p90_s",
    "step_time_mean_s",
    "clips_per_s_per_device",
    "flops_per_step",
    "mfu",
    "peak_reserved_gb",
    "peak_rss_mb",
    "device_power_w",
)
PER_PRECISION_KEYS = ("wall_h", "device_hours", "money")


def profile_metrics(report: ProfileReport) -> dict[str, float | int | None]:
    """The report's numbers, flat (``profile.json``; ``cost/``-prefixed in MLflow)."""
    primary = report.measurements[0]
    schedule = report.plan.schedule
    flat: dict[str, float | int | None] = {
        key: getattr(primary.summary, key) for key in MEASURED_KEYS
    }
    flat |= {
        "max_clips_per_device": primary.memory.max_clips_per_device,
        "measured_clips_per_device": primary.step.clips_per_device,
        "plan_clips_per_device": report.plan.step.clips_per_device,
        "plan_devices": schedule.devices,
        "plan_global_batch": schedule.global_batch,
        "plan_iterations": schedule.iterations,
        "differences": len(report.differences),
    }
    if report.forecast is not None:
        flat |= forecast_metrics(report.forecast)
    for m in report.measurements[1:]:
        p = m.step.precision
        flat[f"{p}_step_time_median_s"] = m.summary.step_time_median_s
        flat[f"{p}_max_clips_per_device"] = m.memory.max_clips_per_device
        row = next(
            (r for r in report.budget if r.precision == p and r.devices == schedule.devices), None
        )
        for key in PER_PRECISION_KEYS:
            flat[f"{p}_forecast_{key}"] = getattr(row, key).mean if row is not None else None
    return flat


def _fmt(value) -> str:
    if value is None:
        return "null"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _side_by_side(report: ProfileReport) -> list[str]:
    measured = report.measurements[0].step
    plan = report.plan
    lines = ["| Step and fleet | Plan | Measured here |", "| --- | --- | --- |"]
    lines += [
        f"| {field} | {_fmt(value)} | {_fmt(getattr(measured, field))} |"
        for field, value in plan.step.model_dump().items()
    ]
    lines += [
        f"| devices | {plan.schedule.devices} | 1 ({report.device_name}) |",
        f"| global batch | {plan.schedule.global_batch} | {measured.clips_per_device} |",
        f"| iterations | {plan.schedule.iterations} | "
        f"{report.measurements[0].record.steps.measured} measured |",
        "",
    ]
    if not report.differences:
        return [*lines, "The measured step is the plan's step on one device."]
    lines += ["Where they differ:", ""]
    return lines + [
        f"- {d.field}: plan {_fmt(d.plan)}, measured {_fmt(d.measured)}: {d.handling}"
        for d in report.differences
    ]


def _windows(report: ProfileReport) -> list[str]:
    lines = [
        "| Precision | Clips per device | Steps measured | Step time, median (s) | Step time, "
        "p90 (s) | Throughput per device (clips/s) | FLOPs per step | MFU (fraction) | GPU memory "
        "reserved, peak (GiB) | Largest clips per device that fit |",
        "| " + " | ".join(["---"] * 10) + " |",
    ]
    for m in report.measurements:
        s = m.summary
        lines.append(
            f"| {m.step.precision} | {m.step.clips_per_device} | {s.steps_measured} | "
            f"{_fmt(s.step_time_median_s)} | {_fmt(s.step_time_p90_s)} | "
            f"{_fmt(s.clips_per_s_per_device)} | {_fmt(s.flops_per_step)} | {_fmt(s.mfu)} | "
            f"{_fmt(s.peak_reserved_gb)} | {_fmt(m.memory.max_clips_per_device)} |"
        )
    return lines


def _switch_section(report: ProfileReport) -> list[str]:
    if report.switches is None:
        return []
    return ["## Speed switches on this device", "", *markdown_lines(report.switches), ""]


def summary_lines(report: ProfileReport) -> list[str]:
    """The two or three sentences that answer "what will the plan cost, on what"."""
    fc, plan = report.forecast, report.plan
    step, schedule = plan.step, plan.schedule
    what = (
        f"The plan {plan.source} ({step.variant}, {step.width}x{step.height}, "
        f"{schedule.iterations} iterations of global batch {schedule.global_batch} on "
        f"{schedule.devices} device(s), {step.precision})"
    )
    if fc is None:
        return [f"{what} could not be forecast: {report.forecast_note}.", ""]
    derived = (
        f", widened for the {len(fc.derivation)} derived figure(s) listed below"
        if fc.derivation
        else ""
    )
    w, d, m = fc.wall_h, fc.device_hours, fc.money
    return [
        f"{what} would take {num(w.mean)} h of wall time ({num(w.low)}–{num(w.high)}), "
        f"{num(d.mean)} {fc.hours_unit} ({num(d.low)}–{num(d.high)}) and {num(m.mean)} "
        f"{fc.currency} ({num(m.low)}–{num(m.high)}) on devices like this one "
        f"({report.device_name}). It is a forecast from {fc.steps_measured} training steps "
        "measured here; its band is the sampling noise of those steps (p10–p90 of a bootstrap)"
        f"{derived}: it does not cover a change of machine or load.",
        "",
    ]


def _section(title: str, body: list[str]) -> list[str]:
    return [f"## {title}", "", *body, ""]


def _conditions_table(report: ProfileReport) -> list[str]:
    rows = [f"| {k} | {_fmt(v)} |" for k, v in report.conditions.items()]
    return ["| Condition | Value |", "| --- | --- |", *rows]


def sections(report: ProfileReport) -> list[list[str]]:
    """The report's sections in order: answer first, then tables, then details."""
    fc = report.forecast
    currency = fc.currency if fc else ""
    return [
        [f"# What the plan {report.plan.source} will cost", "", *summary_lines(report)],
        _section(
            f"Budget by device count ({report.hours_unit}, {currency})",
            budget.budget_lines(report.budget, report.hours_unit, currency),
        ),
        _section(
            "Forecast of the plan",
            forecast_lines(fc) if fc is not None else [f"Not available: {report.forecast_note}"],
        ),
        _section("On other device kinds (derived)", report.other_devices or ["Not computed."]),
        _switch_section(report),
        _section("The plan and what was measured", _side_by_side(report)),
        _section("Measured windows", _windows(report)),
        _section("Conditions", _conditions_table(report)),
        _section("Notes", [f"- {note}" for note in report.notes]),
    ]


def markdown(report: ProfileReport) -> str:
    """The report for people: the answer, the budget, forecast, plan beside measured, details."""
    return "\n".join(line for section in sections(report) for line in section)


FILES = ("profile.json", "report.json", "profile.md")


def write(out: Path, report: ProfileReport) -> list[Path]:
    """``profile.json`` (flat numbers), ``report.json`` (everything), ``profile.md``."""
    paths = [out / name for name in FILES]
    write_json(paths[0], profile_metrics(report))
    write_json(paths[1], report.model_dump(mode="json"))
    write_text(paths[2], markdown(report))
    return paths


def log_summary(report: ProfileReport) -> None:
    fc = report.forecast
    if fc is None:
        log.info("no forecast: %s", report.forecast_note)
        return
    log.info(
        "forecast for %s: %d iterations on %d %s device(s): %.1f h wall (%.1f–%.1f), %.0f %s, "
        "%.0f %s; %s",
        report.plan.source,
        fc.iterations,
        fc.devices,
        report.device_kind,
        fc.wall_h.mean,
        fc.wall_h.low,
        fc.wall_h.high,
        fc.device_hours.mean,
        fc.hours_unit,
        fc.money.mean,
        fc.currency,
        "derived: " + "; ".join(fc.derivation) if fc.derivation else "measured as planned",
    )
