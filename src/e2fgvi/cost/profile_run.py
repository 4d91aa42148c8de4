"""A profile as its own MLflow run, comparable with a training run of the same plan.

It shares the training run's keys for the same things (``tracking.names``): ``config.*`` (the
plan), ``device.*`` (where it was measured), ``cost.*`` prices, ``measured/…`` per-step figures
(step time, device-hours and money per 1k iterations), and adds the plan's forecast under
``forecast/…`` (means; each band's range is a tag). It has the standard source tags and starts
when the profile started, so its duration is the profile's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e2fgvi import tracking
from e2fgvi.config import Params
from e2fgvi.cost.forecast import FORECAST_KEYS, price_per_device_hour
from e2fgvi.cost.profile_report import ProfileReport
from e2fgvi.cost.publish import cost_tags

PROFILE_SOURCE = "src/e2fgvi/stages/profile.py"
# Figures of the profiling window that hold for any run length (its totals do not: they are
# the cost of profiling, not of the plan).
PER_STEP = ("step_time_median_s", "device_hours_per_1k_iter", "clips_per_s_per_device", "mfu",
            "peak_allocated_gb")  # fmt: skip


def _bands(report: ProfileReport) -> dict[str, Any]:
    fc = report.forecast
    if fc is None:
        return {}
    return {
        key: (band.mean, band.low, band.high) if (band := getattr(fc, key)) else None
        for key in FORECAST_KEYS
    }


def _note(report: ProfileReport, bands: dict[str, Any], currency: str) -> str:
    plan, primary = report.plan, report.measurements[0]
    shape, schedule = plan.step, plan.schedule
    kind = report.device_kind
    variant = tracking.names.PAPER_NAMES.get(shape.variant, shape.variant)
    described = {
        "source": plan.source, "variant": variant, "size": f"{shape.width}x{shape.height}",
        "iterations": schedule.iterations, "devices": schedule.devices,
        "precision": shape.precision, "global_batch": schedule.global_batch,
    }  # fmt: skip
    measured = {
        "device": "GPU" if kind == "cuda" else f"{kind.upper()} device",
        "name": report.device_name,
        "steps": primary.summary.steps_measured,
        "step_s": primary.summary.step_time_median_s,
        "per_1k": primary.summary.device_hours_per_1k_iter,
        "hours_unit": report.hours_unit,
    }
    return " ".join(
        (
            tracking.profile_sentence(described, measured),
            tracking.forecast_sentence(bands, currency, report.hours_unit),
        )
    )


def track(
    report: ProfileReport, params: Params, mlruns: Path, artifacts: list[Path], started_ms: int
) -> None:
    """The profile as its own MLflow run (tag ``cost.kind=profile``), from ``started_ms`` on."""
    names = tracking.names
    plan, primary, fc = report.plan, report.measurements[0], report.forecast
    currency = fc.currency if fc else params.cost.currency
    price = price_per_device_hour(params.cost, report.device_kind)
    shape, schedule = plan.step.model_dump(), plan.schedule.model_dump()
    label = names.run_label(shape, plan.schedule.devices, report.device_kind)
    logger = tracking.RunLogger(
        uri=tracking.tracking_uri(mlruns),
        experiment=params.tracking.experiment,
        run_name="profile-" + tracking.run_name("", label=label),
        artifact_root=mlruns,
        start_time_ms=started_ms,
    )
    logger.log_params(
        names.config_params(shape, schedule)
        | names.device_params(report.device_kind, report.device_name, 1)
        | names.price_params(currency, price, params.cost.price_per_kwh)
    )
    figures = {k: getattr(primary.summary, k) for k in PER_STEP}
    bands = _bands(report)
    logger.log_metrics(
        names.measured_metrics(figures, currency, price) | names.forecast_metrics(bands, currency),
        step=0,
    )
    logger.set_tags(
        tracking.source_tags(PROFILE_SOURCE)
        | cost_tags(
            "profile", report.device_kind, [report.device_name], primary.step.precision, currency
        )
        | names.forecast_tags(bands, currency)
        | {
            "cost.plan": plan.source,
            "cost.hours_unit": report.hours_unit,
            "cost.derivation": "; ".join(fc.derivation) if fc and fc.derivation else "none",
        }
    )
    logger.set_note("ran", _note(report, bands, currency))
    logger.share_cost_view(currency)
    for path in artifacts:
        logger.log_artifact(path, "cost")
    if not artifacts:
        logger.log_text(json.dumps(report.model_dump(mode="json"), indent=2), "cost/report.json")
    logger.end()
    logger.close()
