"""A run's description (MLflow's run note) in sentences, and the registered versions it describes.

Each stage writes its own sentence (``ran`` by train, ``scored`` by evaluate, ``cost`` by the
cost stage) as tag ``e2fgvi.note.<part>``; the note is recomposed from all parts whenever one
changes, so stages may run in any order and again. Versions of the registered model made from
the run carry the note, a link to the run's cost report, and the run's eval scores and cost
figures (rounded) as tags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from e2fgvi.tracking.names import (
    COST_REPORT,
    MEASURED_PREFIX,
    NOTE_PART_TAG,
    NOTE_PARTS,
    NOTE_TAG,
    VIEW_KEY,
    VIEW_TAG,
    cost_view,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

EXPERIMENT_NOTE = (
    "Training runs of E2FGVI (video inpainting, CVPR 2022), one per `dvc repro` or "
    "`dvc exp run`, and profile runs (tag cost.kind = profile) that forecast what a plan will "
    "cost. Each run's description says what ran, what it scored and what it cost; compare runs "
    "on the config.* and device.* params and the measured/ and forecast/ metrics (money in the "
    "currency its name ends with): [runs table with the cost columns]"
    "(#/experiments/{experiment_id}/runs?viewStateShareKey={view})."
)

_VERSION_TAG_PREFIXES = ("eval/", MEASURED_PREFIX)


def _figure(value: float | None, unit: str = "", digits: int = 3) -> str:
    return "not measured" if value is None else f"{value:.{digits}g}{unit}"


def ran_sentence(label: dict[str, Any]) -> str:
    """What ran: variant, size, iterations, devices, precision and the data."""
    devices = label["devices"]
    return (
        f"{label['variant']} trained for {label['iterations']} iterations at {label['size']} "
        f"on {devices} {label['device']} device{'s' * (devices != 1)} in {label['precision']}, "
        f"global batch {label['global_batch']}, on {label['data']}."
    )


def cost_sentence(figures: dict[str, Any], currency: str, hours_unit: str) -> str:
    """What it cost, with units and currency (``figures``: cost record fields)."""
    per_1k = figures.get("device_hours_per_1k_iter")
    return (
        f"It cost {_figure(figures['money'])} {currency}: "
        f"{_figure(figures['device_hours'])} {hours_unit} over "
        f"{_figure(figures['wall_h'])} h wall, "
        f"energy {_figure(figures.get('energy_kwh'), ' kWh')}, "
        f"median step {_figure(figures.get('step_time_median_s'), ' s')} "
        f"({_figure(per_1k)} {hours_unit} per 1k iterations)."
    )


def scored_sentence(scores: dict[str, float | None], videos: int, size: str) -> str:
    """What it scored on the test videos."""
    shown = {"psnr": ("PSNR", " dB", 4), "ssim": ("SSIM", "", 4), "vfid": ("VFID", "", 4)}
    parts = [
        f"{name} {_figure(scores.get(key), unit, digits)}"
        for key, (name, unit, digits) in shown.items()
    ]
    return f"Scored on {videos} test video{'s' * (videos != 1)} at {size}: {', '.join(parts)}."


def experiment_note(experiment_id: str) -> str:
    """The experiment's description, linking the runs table with the cost columns."""
    return EXPERIMENT_NOTE.format(experiment_id=experiment_id, view=VIEW_KEY)


def send_view(mlflow: MlflowClient, run_id: str, currency: str) -> None:
    """The run's experiment gets the shared runs-table view with the cost columns."""
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    mlflow.set_experiment_tag(experiment_id, VIEW_TAG, cost_view(currency))


def send_note(mlflow: MlflowClient, run_id: str, part: str, text: str) -> None:
    """Set one sentence of the run's note and recompose the note; refresh its model versions."""
    from mlflow.entities import RunTag

    tags = mlflow.get_run(run_id).data.tags
    parts = {p: tags.get(NOTE_PART_TAG.format(p), "") for p in NOTE_PARTS}
    parts[part] = text
    note = " ".join(parts[p] for p in NOTE_PARTS if parts[p])
    mlflow.log_batch(
        run_id, tags=[RunTag(NOTE_PART_TAG.format(part), text), RunTag(NOTE_TAG, note)]
    )
    describe_versions(mlflow, run_id)


def version_tags(metrics: dict[str, float]) -> dict[str, str]:
    """The run's eval scores and measured cost, rounded to 4 significant digits."""
    return {
        key: f"{value:.4g}"
        for key, value in metrics.items()
        if key.startswith(_VERSION_TAG_PREFIXES)
    }


def describe_versions(mlflow: MlflowClient, run_id: str) -> None:
    """Every registered version made from the run: the run's note, cost link, rounded figures."""
    versions = mlflow.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        return
    run = mlflow.get_run(run_id)
    link = f"#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/{COST_REPORT}"
    note = run.data.tags.get(NOTE_TAG, "")
    description = f"{note}\n\nCost report: [{COST_REPORT}]({link}) (runs:/{run_id}/{COST_REPORT})"
    tags = {**version_tags(run.data.metrics), "cost_report": f"runs:/{run_id}/{COST_REPORT}"}
    for version in versions:
        for key, value in tags.items():
            mlflow.set_model_version_tag(version.name, version.version, key, value)
        mlflow.update_model_version(version.name, version.version, description=description)


def profile_sentence(plan: dict[str, Any], measured: dict[str, Any]) -> str:
    """What a profile measured, for which plan."""
    return (
        f"Profile of the plan {plan['source']}: {plan['variant']} at {plan['size']} for "
        f"{plan['iterations']} iterations on {plan['devices']} devices in {plan['precision']}, "
        f"global batch {plan['global_batch']}; measured here on one {measured['device']} "
        f"({measured['name']}) for {measured['steps']} steps: median step "
        f"{_figure(measured['step_s'], ' s')}, {_figure(measured['per_1k'])} "
        f"{measured['hours_unit']} per 1k iterations."
    )


def forecast_sentence(bands: dict[str, Any], currency: str, hours_unit: str) -> str:
    """The forecast of a plan: money, device-hours and wall time with their bands."""
    if not bands.get("money"):
        return "No forecast (see the profile report's forecast note)."

    def ranged(key: str, unit: str) -> str:
        mean, low, high = bands[key]
        return f"{mean:.3g}{unit} ({low:.3g} to {high:.3g})"

    return (
        f"Forecast for the plan: {ranged('money', ' ' + currency)}, "
        f"{ranged('device_hours', ' ' + hours_unit)}, {ranged('wall_h', ' h')} wall."
    )
