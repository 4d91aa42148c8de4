"""Forecast a training schedule from measured steps (pure arithmetic).

Used by ``e2fgvi profile`` (steps of the plan's configuration, before launch) and by the ``cost``
stage (only for a run that stopped before its schedule: the rest of it from its own steps). The
method follows peers §3.4: warm-up dropped, steady-state seconds per step, extrapolated to the
schedule's iterations; the band is the p10–p90 range of a block bootstrap of the mean step time
(blocks = the record's contiguous step windows, so slow drifts are resampled as a whole rather
than averaged away).

Units say what was measured: device-hours are hours of the measured device kind (GPU-hours only
when a GPU ran). Every figure not measured directly (step time assumed linear in clips per
device, a precision that could not run, DDP scaling assumed perfect) is listed in ``derivation``
and widens both ends of the band by ``cost.forecast.derived_margin``; without one the band covers
the sampling noise of the measured steps only (benchmarks/forecast_accuracy.py: docs/cost.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from e2fgvi.config import CostParams
from e2fgvi.errors import UserError
from e2fgvi.measure.record import FrozenModel, RankRecord

ASSUMPTIONS = (
    "the schedule's devices are of the measured kind and each runs as fast as the measured one",
    "energy = measured mean power per device x devices x wall time (GPU: NVML; CPU: RAPL "
    "package power, machine-wide; PUE excluded); null where power was not measured",
    "money = device-hours x the price of the measured kind (cost.price_per_gpu_hour or "
    "cost.price_per_cpu_device_hour) + energy x cost.price_per_kwh",
)


def kind_label(device_kind: str) -> str:
    """``GPU`` for CUDA devices, else the kind in capitals (``CPU``)."""
    return "GPU" if device_kind == "cuda" else device_kind.upper()


def hours_unit(device_kind: str) -> str:
    """What an hour of the measured devices is called: GPU-hours only when a GPU ran."""
    return "GPU-hours" if device_kind == "cuda" else f"{kind_label(device_kind)} device-hours"


def price_per_device_hour(cfg: CostParams, device_kind: str) -> float:
    """The price of one device-hour of the measured kind."""
    return cfg.price_per_gpu_hour if device_kind == "cuda" else cfg.price_per_cpu_device_hour


@dataclass(frozen=True)
class StepSample:
    """Measured step times as block means with their step counts, and clips per device."""

    means: tuple[float, ...]
    counts: tuple[int, ...]
    clips_per_device: float

    @property
    def steps(self) -> int:
        return int(sum(self.counts))

    @classmethod
    def from_times(cls, times: Sequence[float], clips_per_device: float) -> StepSample:
        return cls(tuple(float(t) for t in times), (1,) * len(times), clips_per_device)

    @classmethod
    def from_rank(cls, rank: RankRecord) -> StepSample:
        """From one rank's record: its step-time series (block means after decimation)."""
        series = rank.series
        pairs = [
            (mean, n)
            for mean, n in zip(series.column("step_s"), series.counts, strict=True)
            if mean is not None
        ]
        return cls(tuple(m for m, _ in pairs), tuple(n for _, n in pairs), rank.clips_per_step)


class Schedule(FrozenModel):
    """What is forecast: iterations of a global batch split over devices."""

    iterations: int
    devices: int
    global_batch: int

    @property
    def clips_per_device(self) -> int:
        if self.global_batch % self.devices:
            raise UserError(
                f"global batch {self.global_batch} does not split over {self.devices} devices "
                "(train.batch_size must be a multiple of train.nproc_per_node x train.nnodes)"
            )
        return self.global_batch // self.devices


class Band(FrozenModel):
    """A forecast figure: the mean and the band's low and high ends."""

    mean: float
    low: float
    high: float

    def scaled(self, factor: float) -> Band:
        return Band(mean=self.mean * factor, low=self.low * factor, high=self.high * factor)

    def plus(self, other: Band) -> Band:
        return Band(
            mean=self.mean + other.mean, low=self.low + other.low, high=self.high + other.high
        )

    def widened(self, margin: float, times: int) -> Band:
        """Both ends moved out by ``margin`` (relative), ``times`` over."""
        return Band(
            mean=self.mean,
            low=self.low * (1 - margin) ** times,
            high=self.high * (1 + margin) ** times,
        )


class Forecast(FrozenModel):
    """What a schedule will cost, extrapolated from measured steps, and how it was derived."""

    iterations: int
    devices: int
    global_batch: int
    clips_per_device: int
    device_kind: str
    hours_unit: str
    measured_devices: int
    measured_clips_per_device: float
    steps_measured: int
    blocks: int
    step_s: Band
    wall_h: Band
    device_hours: Band
    device_power_w: float | None
    energy_kwh: Band | None
    money: Band
    money_includes_energy: bool
    currency: str
    band: str
    derived: bool
    derivation: list[str]
    assumptions: list[str]


def bootstrap_mean(
    sample: StepSample, rng: np.random.Generator, n_boot: int = 2000, band=(10.0, 90.0)
) -> tuple[float, float, float]:
    """Mean step time and the band's low and high percentiles of its bootstrap distribution."""
    means = np.asarray(sample.means, dtype=float)
    counts = np.asarray(sample.counts, dtype=float)
    if means.size == 0:
        raise UserError("no measured steps to forecast from (all steps were warm-up)")
    mean = float((means * counts).sum() / counts.sum())
    if means.size == 1:
        return mean, mean, mean
    picks = rng.integers(0, means.size, size=(n_boot, means.size))
    boot = (means[picks] * counts[picks]).sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(boot, band)
    return mean, float(low), float(high)


def _derivation(sample: StepSample, schedule: Schedule, measured_devices: int) -> list[str]:
    """What the schedule has that the measured steps did not: each becomes a stated derivation."""
    steps = []
    clips = schedule.clips_per_device
    if clips != sample.clips_per_device:
        steps.append(
            f"step time assumed linear in clips per device: the step measured at "
            f"{sample.clips_per_device:g} clips per device, multiplied by "
            f"{clips / sample.clips_per_device:.3g} for {clips} (not measured at {clips})"
        )
    if schedule.devices != measured_devices:
        steps.append(
            f"DDP scaling assumed perfect: {schedule.devices} devices, {measured_devices} "
            "measured; each device's step as fast as the measured one, communication not modelled"
        )
    return steps


def forecast(
    sample: StepSample,
    cfg: CostParams,
    rng: np.random.Generator,
    schedule: Schedule,
    device_kind: str,
    *,
    measured_devices: int = 1,
    power_w: float | None = None,
    derivation: Sequence[str] = (),
) -> Forecast:
    """Wall time, device-hours, energy and money of ``schedule``, with band and derivation.

    ``power_w`` is the measured mean power of one device; ``derivation`` lists differences the
    caller already knows of (e.g. a precision that could not run), each widening the band.
    """
    clips = schedule.clips_per_device
    steps = [*derivation, *_derivation(sample, schedule, measured_devices)]
    mean, low, high = (v * clips / sample.clips_per_device for v in bootstrap_mean(sample, rng))
    step_s = Band(mean=mean, low=low, high=high).widened(cfg.forecast.derived_margin, len(steps))
    device_hours = step_s.scaled(schedule.iterations * schedule.devices / 3600.0)
    energy = device_hours.scaled(power_w / 1000.0) if power_w is not None else None
    money = device_hours.scaled(price_per_device_hour(cfg, device_kind))
    if energy is not None:
        money = money.plus(energy.scaled(cfg.price_per_kwh))
    return Forecast(
        iterations=schedule.iterations,
        devices=schedule.devices,
        global_batch=schedule.global_batch,
        clips_per_device=clips,
        device_kind=device_kind,
        hours_unit=hours_unit(device_kind),
        measured_devices=measured_devices,
        measured_clips_per_device=sample.clips_per_device,
        steps_measured=sample.steps,
        blocks=len(sample.means),
        step_s=step_s,
        wall_h=step_s.scaled(schedule.iterations / 3600.0),
        device_hours=device_hours,
        device_power_w=power_w,
        energy_kwh=energy,
        money=money,
        money_includes_energy=energy is not None,
        currency=cfg.currency,
        band="p10-p90 of a block bootstrap of the mean step time (the measured steps' sampling "
        "noise only, not drift or another machine's load)"
        + (f", widened by {cfg.forecast.derived_margin:g} per derived figure" if steps else ""),
        derived=bool(steps),
        derivation=steps,
        assumptions=list(ASSUMPTIONS),
    )


FORECAST_KEYS = ("step_s", "wall_h", "device_hours", "energy_kwh", "money")


def forecast_metrics(result: Forecast) -> dict[str, float | int | None]:
    """``forecast_…`` figures (mean, low, high), flat: DVC metrics and, prefixed, MLflow."""
    metrics: dict[str, float | int | None] = {}
    for key in FORECAST_KEYS:
        band = getattr(result, key)
        for part, suffix in (("mean", ""), ("low", "_low"), ("high", "_high")):
            metrics[f"forecast_{key}{suffix}"] = getattr(band, part) if band else None
    metrics["forecast_derivations"] = len(result.derivation)
    return metrics
