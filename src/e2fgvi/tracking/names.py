"""The names a planner reads in the MLflow UI: the one table from record fields to MLflow keys.

Every cost figure a run shows goes through ``MEASURED`` or ``FORECAST`` (cost record field ->
MLflow metric name), so renaming a record field is one line here. Units are in the names, as
MLflow shows no unit field: ``_<currency>`` (from ``cost.currency``), ``_kwh``, ``_hours``,
``_s``. The UI's model-metrics page puts each prefix in its own section, sorted by name (MLflow
3.17.2: ``extractChartSectionName`` takes all but the last ``/`` part; sections sort with
``localeCompare``, unprefixed "Model metrics" and "System metrics" last), so the prefixes are
chosen to sort the learning first: ``eval/`` and ``loss/`` (then ``lr/``), before the measured
cost (``measured/``, single values), the per-step timings (``step/``) and, in a profile run, the
forecast (``forecast/``). A training run and a profile run share the keys of the same things:
``config.*`` and ``device.*`` params, ``measured/step_time_median_s``,
``measured/device_hours_per_1k_iter`` and ``measured/money_<cur>_per_1k_iter``.
"""

from __future__ import annotations

import json
from typing import Any

MEASURED_PREFIX, FORECAST_PREFIX, STEP_PREFIX = "measured/", "forecast/", "step/"

# Cost record field -> metric name under ``measured/`` ({cur}: the currency, lower case).
MEASURED = {
    "money": "money_{cur}",
    "money_per_1k_iter": "money_{cur}_per_1k_iter",
    "device_hours": "device_hours",
    "device_hours_per_1k_iter": "device_hours_per_1k_iter",
    "energy_kwh": "energy_kwh",
    "wall_h": "wall_hours",
    "step_time_median_s": "step_time_median_s",
    "clips_per_s": "clips_per_s",
    "clips_per_s_per_device": "clips_per_s_per_device",
    "mfu": "mfu",
    "peak_allocated_gb": "peak_allocated_gb",
}

# Forecast field (the mean of its band) -> metric name under ``forecast/``; the band is a tag.
FORECAST = {
    "money": "money_{cur}",
    "device_hours": "device_hours",
    "wall_h": "wall_hours",
    "energy_kwh": "energy_kwh",
    "step_s": "step_time_s",
}

# The meter's and the loop's per-step figures -> their series names (charts with a step axis).
STEP = {
    "cost/step_s": "step/time_s",
    "cost/data_wait_s": "step/data_wait_s",
    "cost/compute_s": "step/compute_s",
    "cost/step_clips_per_s": "step/clips_per_s",
    "guard/skipped_updates": "step/skipped_updates",
}

# ``model.variant`` as the paper names it, for run descriptions.
PAPER_NAMES = {"e2fgvi": "E2FGVI", "e2fgvi_hq": "E2FGVI-HQ"}

# The sample strips' image key: its section sorts after the learning and the measured cost.
IMAGE_KEY = "samples/training_clip"

# StepShape fields and schedule fields that both a training run and a profile run log as
# ``config.<field>`` params (the plan a profile measured, or what a training run ran).
CONFIG_FIELDS = (
    "variant", "width", "height", "local_frames", "ref_frames", "clips_per_device", "precision",
    "devices", "global_batch", "iterations",
)  # fmt: skip

# Param sections kept out of a run's params list: hardware peak tables, prices and forecast
# knobs (``cost``), and the data, preparation, masks and tracking settings. They are all in one
# artifact, ``config/params.json`` (the whole params file); the prices that made the money are
# params ``cost.*``. Fewer params also keep the UI's image card readable: it prints every param
# of the run above the image.
HIDDEN_PARAMS = ("cost.", "data.", "prepare.", "masks.", "tracking.")
PARAMS_ARTIFACT = "config/params.json"

# The runs table with the cost columns: an MLflow shared view (experiment tag
# ``mlflow.sharedViewState.<key>``), opened by ``#/experiments/<id>/runs?viewStateShareKey=<key>``.
VIEW_KEY = "cost"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_KEY
NOTE_TAG = "mlflow.note.content"  # the run's (and the experiment's) description in the UI
NOTE_PARTS = ("ran", "cost", "scored")  # order of the note's sentences
NOTE_PART_TAG = "e2fgvi.note.{}"
COST_REPORT = "cost/cost.md"  # the run's cost report artifact, linked from the model version


def currency_unit(currency: str) -> str:
    """``USD`` -> ``usd`` (a metric-name suffix)."""
    return "".join(c for c in currency.lower() if c.isascii() and c.isalnum()) or "money"


def measured_metrics(
    figures: dict[str, Any], currency: str, price_per_device_hour: float
) -> dict[str, float | None]:
    """Measured cost figures (record field -> value) as ``measured/…`` metrics."""
    values = dict(figures)
    per_1k = values.get("device_hours_per_1k_iter")
    values["money_per_1k_iter"] = per_1k * price_per_device_hour if per_1k is not None else None
    cur = currency_unit(currency)
    return {
        MEASURED_PREFIX + name.format(cur=cur): values.get(field)
        for field, name in MEASURED.items()
        if field in values
    }


def forecast_metrics(bands: dict[str, Any], currency: str) -> dict[str, float | None]:
    """Forecast bands (field -> (mean, low, high) or None) as ``forecast/…`` metrics (means)."""
    cur = currency_unit(currency)
    return {
        FORECAST_PREFIX + name.format(cur=cur): bands[field][0] if bands[field] else None
        for field, name in FORECAST.items()
        if field in bands
    }


def forecast_tags(bands: dict[str, Any], currency: str) -> dict[str, str]:
    """Each forecast band's low–high range as one tag (``forecast.<name>_range``)."""
    cur = currency_unit(currency)
    return {
        f"forecast.{name.format(cur=cur)}_range": f"{band[1]:.4g} to {band[2]:.4g}"
        for field, name in FORECAST.items()
        if (band := bands.get(field))
    }


def step_metrics(values: dict[str, float]) -> dict[str, float]:
    """Per-step figures under their series names (unlisted keys keep theirs)."""
    return {STEP.get(key, key): value for key, value in values.items()}


def config_params(shape: dict[str, Any], schedule: dict[str, Any]) -> dict[str, Any]:
    """``config.*`` params from a step shape and a schedule (the same keys in every run)."""
    both = {**shape, **schedule}
    return {f"config.{field}": both[field] for field in CONFIG_FIELDS if field in both}


def device_params(kind: str, name: str, count: int) -> dict[str, Any]:
    """``device.*`` params: the kind (cuda, cpu, ...), its name and how many ran."""
    return {"device.kind": kind, "device.name": name, "device.count": count}


def price_params(currency: str, price_per_device_hour: float, price_per_kwh: float) -> dict:
    """The prices that turned hours and energy into money, as ``cost.*`` params."""
    return {
        "cost.currency": currency,
        "cost.price_per_device_hour": price_per_device_hour,
        "cost.price_per_kwh": price_per_kwh,
    }


def visible_params(flat: dict[str, Any]) -> dict[str, Any]:
    """A flat params dump without the sections kept out of the params list."""
    return {k: v for k, v in flat.items() if not k.startswith(HIDDEN_PARAMS)}


def run_label(shape: dict[str, Any], devices: int, device_kind: str) -> str:
    """``e2fgvi-hq-432x240-8gpu-fp32``: variant, frame size, device count and kind, precision."""
    kind = "gpu" if device_kind == "cuda" else device_kind
    variant = str(shape["variant"]).replace("_", "-")
    size = f"{shape['width']}x{shape['height']}"
    return f"{variant}-{size}-{devices}{kind}-{shape['precision']}"


def cost_view(currency: str) -> str:
    """The shared view's state (JSON): the runs table's columns a planner compares."""
    cur = currency_unit(currency)
    columns = [
        "attributes.`Description`", "attributes.`Duration`", "params.`config.variant`",
        "params.`config.width`", "params.`config.devices`", "params.`config.precision`",
        "params.`device.kind`", "metrics.`eval/psnr`", "metrics.`eval/ssim`",
        f"metrics.`measured/money_{cur}`", "metrics.`measured/device_hours`",
        "metrics.`measured/step_time_median_s`", "metrics.`measured/device_hours_per_1k_iter`",
        f"metrics.`measured/money_{cur}_per_1k_iter`", f"metrics.`forecast/money_{cur}`",
        "metrics.`forecast/device_hours`",
    ]  # fmt: skip
    return json.dumps({"selectedColumns": columns})


def run_figures(metrics: dict[str, float], params: dict[str, str]) -> dict[str, float | None]:
    """A run's figures by record field name (``forecast_<field>`` for forecasts), read back."""
    cur = currency_unit(params.get("cost.currency", ""))
    figures: dict[str, float | None] = {
        field: metrics.get(MEASURED_PREFIX + name.format(cur=cur))
        for field, name in MEASURED.items()
    }
    figures |= {
        f"forecast_{field}": metrics.get(FORECAST_PREFIX + name.format(cur=cur))
        for field, name in FORECAST.items()
    }
    count = params.get("device.count")
    figures["devices"] = float(count) if count else None
    figures["psnr"], figures["ssim"] = metrics.get("eval/psnr"), metrics.get("eval/ssim")
    return figures
