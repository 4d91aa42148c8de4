"""The budget table of a plan: wall time, device-hours, kWh and money on 1, 2, 4, 8 … devices.

One row per device count and measured precision, each a ``forecast`` of the plan's iterations
and global batch from that precision's measured steps. A row is ``measured`` only when its step
is exactly what ran (same clips per device, one device, the precision it is labelled with);
every other row is ``derived`` and lists how (step time assumed linear in clips per device, DDP
scaling assumed perfect), with its band widened accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from e2fgvi.config import CostParams
from e2fgvi.cost.forecast import Band, Schedule, StepSample, forecast
from e2fgvi.cost.glossary import num
from e2fgvi.measure.record import FrozenModel


@dataclass(frozen=True)
class MeasuredSteps:
    """One precision's measured steps, as the budget needs them."""

    precision: str
    sample: StepSample
    device_kind: str
    power_w: float | None
    max_clips_per_device: int | None  # largest that fit (GPU probe); None: not probed
    derivation: tuple[str, ...] = ()  # known differences (a substituted precision)


class BudgetRow(FrozenModel):
    devices: int
    precision: str
    clips_per_device: int
    basis: Literal["measured", "derived"]
    derivation: list[str]
    fits: bool | None  # the clips per device fit in the measured device's memory (None: unknown)
    step_s: Band
    wall_h: Band
    device_hours: Band
    energy_kwh: Band | None
    money: Band


def device_counts(plan_devices: int, global_batch: int) -> list[int]:
    """1, 2, 4, 8 … up to the plan's devices (at least 8), and the plan's own; each splits the
    global batch evenly."""
    counts, n = {plan_devices}, 1
    while n <= max(8, plan_devices):
        counts.add(n)
        n *= 2
    return sorted(c for c in counts if c <= global_batch and global_batch % c == 0)


def budget_table(
    measured: list[MeasuredSteps], schedule: Schedule, cfg: CostParams, rng: np.random.Generator
) -> list[BudgetRow]:
    """Rows for every device count of ``device_counts`` and every measured precision."""
    rows = []
    for n in device_counts(schedule.devices, schedule.global_batch):
        for m in measured:
            plan = schedule.model_copy(update={"devices": n})
            fc = forecast(
                m.sample,
                cfg,
                rng,
                plan,
                m.device_kind,
                power_w=m.power_w,
                derivation=m.derivation,
            )
            limit = m.max_clips_per_device
            rows.append(
                BudgetRow(
                    devices=n,
                    precision=m.precision,
                    clips_per_device=fc.clips_per_device,
                    basis="derived" if fc.derived else "measured",
                    derivation=fc.derivation,
                    fits=None if limit is None else fc.clips_per_device <= limit,
                    step_s=fc.step_s,
                    wall_h=fc.wall_h,
                    device_hours=fc.device_hours,
                    energy_kwh=fc.energy_kwh,
                    money=fc.money,
                )
            )
    return rows


def _band(band: Band | None) -> str:
    if band is None:
        return "not measured"
    return f"{num(band.mean)} ({num(band.low)}–{num(band.high)})"


def _fits(fits: bool | None) -> str:
    return {None: "not probed", True: "yes", False: "no: accumulate gradients"}[fits]


def budget_lines(rows: list[BudgetRow], hours_unit: str, currency: str) -> list[str]:
    """The table as Markdown, then each derived row's derivation, numbered once."""
    header = (
        "| Devices | Precision | Clips per device | Basis | Fits in memory | Wall time (h) | "
        f"Device-hours ({hours_unit}) | Energy (kWh) | Money ({currency}) |"
    )
    lines = [header, "| " + " | ".join(["---"] * 9) + " |"]
    notes: list[str] = []
    for row in rows:
        marks = []
        for step in row.derivation:
            if step not in notes:
                notes.append(step)
            marks.append(str(notes.index(step) + 1))
        basis = row.basis + (f" ({', '.join(marks)})" if marks else "")
        lines.append(
            f"| {row.devices} | {row.precision} | {row.clips_per_device} | {basis} | "
            f"{_fits(row.fits)} | {_band(row.wall_h)} | {_band(row.device_hours)} | "
            f"{_band(row.energy_kwh)} | {_band(row.money)} |"
        )
    return [*lines, "", *[f"{i}. {step}" for i, step in enumerate(notes, 1)]]
