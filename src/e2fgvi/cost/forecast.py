"""Forecast a full training schedule from measured steps (pure arithmetic).

Used by ``e2fgvi profile`` (a short profiling window before launch) and by the ``cost`` stage
(the training run's own measured steps). The method follows peers §3.4: warm-up dropped,
steady-state seconds per step, extrapolated to the configured iterations; the band is the
p10–p90 range of a block bootstrap of the mean step time (blocks = the record's contiguous
step windows, so slow drifts are resampled as a whole rather than averaged away).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from e2fgvi.config import CostParams, ForecastParams
from e2fgvi.errors import UserError
from e2fgvi.measure.record import FrozenModel, RankRecord

ASSUMPTIONS = (
    "step time scales linearly with clips per GPU when the plan's differs from the measured one",
    "GPUs of the plan run as fast as the measured device; DDP communication beyond what "
    "the measured run contained is not modelled",
    "energy = measured mean GPU power x GPUs x wall time (GPU only; CPU, DRAM and PUE excluded)",
    "money = GPU-hours x price_per_gpu_hour + energy x price_per_kwh (set one price to 0 to "
    "count only rental or only electricity)",
)


@dataclass(frozen=True)
class StepSample:
    """Measured step times as block means with their step counts, and clips per GPU per step."""

    means: tuple[float, ...]
    counts: tuple[int, ...]
    clips_per_gpu: float

    @property
    def steps(self) -> int:
        return int(sum(self.counts))

    @classmethod
    def from_times(cls, times: Sequence[float], clips_per_gpu: float) -> StepSample:
        return cls(tuple(float(t) for t in times), (1,) * len(times), clips_per_gpu)

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


class Band(FrozenModel):
    """A forecast figure: the mean and the band's low and high ends."""

    mean: float
    low: float
    high: float

    def scaled(self, factor: float) -> Band:
        return Band(mean=self.mean * factor, low=self.low * factor, high=self.high * factor)


class Forecast(FrozenModel):
    """What the plan will cost, extrapolated from measured steps, with the assumptions made."""

    iterations: int
    gpus: int
    global_batch: int
    clips_per_gpu: int
    measured_clips_per_gpu: float
    steps_measured: int
    blocks: int
    step_s: Band
    wall_h: Band
    gpu_hours: Band
    gpu_power_w: float | None
    energy_kwh: Band | None
    money: Band
    money_includes_energy: bool
    currency: str
    band: str
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


def plan_clips_per_gpu(plan: ForecastParams) -> int:
    if plan.global_batch % plan.gpus:
        raise UserError(
            f"params.yaml: cost.forecast.global_batch ({plan.global_batch}) must be a multiple "
            f"of cost.forecast.gpus ({plan.gpus})"
        )
    return plan.global_batch // plan.gpus


def forecast(
    sample: StepSample,
    cfg: CostParams,
    rng: np.random.Generator,
    gpu_power_w: float | None = None,
    plan: ForecastParams | None = None,
) -> Forecast:
    """Wall time, GPU-hours, energy and money of ``plan`` (default ``cfg.forecast``), with band."""
    plan = plan or cfg.forecast
    clips = plan_clips_per_gpu(plan)
    scale = clips / sample.clips_per_gpu
    mean, low, high = (v * scale for v in bootstrap_mean(sample, rng))
    step_s = Band(mean=mean, low=low, high=high)
    gpu_hours = step_s.scaled(plan.iterations * plan.gpus / 3600.0)
    energy = None
    if gpu_power_w is not None:
        energy = step_s.scaled(plan.iterations * plan.gpus * gpu_power_w / 3.6e6)
    wall_s = step_s.scaled(plan.iterations)
    money = gpu_hours.scaled(cfg.price_per_gpu_hour)
    if energy is not None:
        money = Band(
            mean=money.mean + energy.mean * cfg.price_per_kwh,
            low=money.low + energy.low * cfg.price_per_kwh,
            high=money.high + energy.high * cfg.price_per_kwh,
        )
    return Forecast(
        iterations=plan.iterations,
        gpus=plan.gpus,
        global_batch=plan.global_batch,
        clips_per_gpu=clips,
        measured_clips_per_gpu=sample.clips_per_gpu,
        steps_measured=sample.steps,
        blocks=len(sample.means),
        step_s=step_s,
        wall_h=Band(**{k: v / 3600.0 for k, v in wall_s.model_dump().items()}),
        gpu_hours=gpu_hours,
        gpu_power_w=gpu_power_w,
        energy_kwh=energy,
        money=money,
        money_includes_energy=energy is not None,
        currency=cfg.currency,
        band="p10-p90 of a block bootstrap of the mean step time",
        assumptions=list(ASSUMPTIONS),
    )


def forecast_metrics(result: Forecast) -> dict[str, float | None]:
    """``cost/forecast_…`` metrics (mean, low, high) for MLflow."""
    metrics: dict[str, float | None] = {}
    for key in ("step_s", "wall_h", "gpu_hours", "energy_kwh", "money"):
        band = getattr(result, key)
        for part, suffix in (("mean", ""), ("low", "_low"), ("high", "_high")):
            metrics[f"cost/forecast_{key}{suffix}"] = getattr(band, part) if band else None
    return metrics
