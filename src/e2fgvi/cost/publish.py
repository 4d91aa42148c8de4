"""Reading the cost stage's inputs and logging its results into the experiment's MLflow run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from e2fgvi.config import CostParams, TrainParams
from e2fgvi.cost.forecast import price_per_device_hour
from e2fgvi.cost.summary import CostReport
from e2fgvi.errors import UserError, first_problem
from e2fgvi.tracking import RunLogger, cost_sentence, names

log = logging.getLogger(__name__)


def read_json(path: Path, producer: str) -> Any:
    """A JSON input file; a missing or broken one is one line naming it and its producer."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; {producer}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); {producer}") from None


def used_train_params(path: Path) -> TrainParams:
    """The ``train`` section the run actually used, from its params dump."""
    raw = read_json(path, "the train stage writes it")
    section = raw.get("train") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        raise UserError(f"{path}: no 'train' section; rerun the train stage")
    try:
        return TrainParams.model_validate(section)
    except ValidationError as exc:
        problem = first_problem(exc, "")
        raise UserError(f"{path}: train.{problem}; rerun the train stage") from None


def switches(train: TrainParams) -> dict[str, Any]:
    """Every speed switch of the run, to be logged beside the figures."""
    return {
        "amp": train.amp,
        "tf32": train.tf32,
        "cudnn_benchmark": train.cudnn_benchmark,
        "channels_last": train.channels_last,
        "compile": train.compile,
        "deterministic": train.deterministic,
    }


def cost_tags(
    kind: str, device_kind: str, device_names: list[str], precision: str, currency: str
) -> dict[str, str]:
    """Tags naming what was measured: the report kind, device kind and names, precision."""
    return {
        "cost.kind": kind,
        "cost.device_kind": device_kind,
        "cost.device": ", ".join(device_names),
        "cost.precision": precision,
        "cost.currency": currency,
    }


def log_report(
    logger: RunLogger, report: CostReport, artifacts: list[Path], kind: str, cfg: CostParams
) -> None:
    """The measured figures (``measured/…``), device and price params, tags, the report files
    and the run note's cost sentence; the forecast of the run's own schedule stays in the
    report (a run does not forecast itself in MLflow)."""
    measured = report.measured
    figures = measured.model_dump()
    price = price_per_device_hour(cfg, measured.device_kind)
    metrics = names.measured_metrics(figures, measured.currency, price)
    logger.log_metrics(metrics, step=0)
    logger.log_params(
        names.device_params(
            measured.device_kind, ", ".join(measured.device_names), measured.devices
        )
        | names.price_params(measured.currency, price, cfg.price_per_kwh)
    )
    logger.set_tags(
        cost_tags(
            kind, measured.device_kind, measured.device_names, measured.precision, measured.currency
        )
    )
    for path in artifacts:
        logger.log_artifact(path, "cost")
    logger.set_note("cost", cost_sentence(figures, measured.currency, measured.hours_unit))
    logger.share_cost_view(measured.currency)
    sent = {k: v for k, v in metrics.items() if v is not None}
    log.info(
        "logged %d cost metrics and %d artifacts to run %s",
        len(sent),
        len(artifacts),
        logger.run_id,
    )
