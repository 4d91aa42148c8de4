"""``e2fgvi cost compare``: one table of measured and forecast cost across MLflow runs."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from e2fgvi import tracking
from e2fgvi.errors import UserError

COLUMNS = (
    ("experiment", "experiment"),
    ("run", "run"),
    ("kind", "kind"),
    ("device", "device"),
    ("gpus", "GPUs"),
    ("clips_per_s_per_gpu", "clips/s per GPU"),
    ("gpu_hours_per_1k_iter", "GPU-h per 1k it"),
    ("forecast_gpu_hours", "forecast GPU-h"),
    ("forecast_money", "forecast money"),
    ("psnr", "PSNR"),
)
_METRICS = {
    "gpus": "cost/gpus",
    "clips_per_s_per_gpu": "cost/clips_per_s_per_gpu",
    "gpu_hours_per_1k_iter": "cost/gpu_hours_per_1k_iter",
    "forecast_gpu_hours": "cost/forecast_gpu_hours",
    "forecast_money": "cost/forecast_money",
    "psnr": "eval/psnr",
}


def rows(runs: list[tracking.RunRecord]) -> list[dict[str, Any]]:
    """One row per run that has any cost or evaluation figure."""
    table = []
    for run in runs:
        values = {key: run.metrics.get(metric) for key, metric in _METRICS.items()}
        if all(v is None for v in values.values()):
            continue
        money = values["forecast_money"]
        currency = run.tags.get("cost.currency", "")
        table.append(
            {
                "experiment": run.experiment,
                "run": run.run_name or run.run_id[:8],
                "run_id": run.run_id,
                "kind": run.tags.get("cost.kind", ""),
                "device": run.tags.get("cost.device", ""),
                **values,
                "gpus": int(values["gpus"]) if values["gpus"] is not None else None,
                "currency": currency if money is not None else "",
            }
        )
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(table: list[dict[str, Any]], fmt: str) -> str:
    """The table as text (aligned), csv, json or md."""
    if fmt == "json":
        return json.dumps(table, indent=2) + "\n"
    header = [title for _, title in COLUMNS]
    body = [[_cell(row[key]) for key, _ in COLUMNS] for row in table]
    for line, row in zip(body, table, strict=True):
        if row["currency"]:
            line[header.index("forecast money")] += f" {row['currency']}"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([header, *body])
        return buffer.getvalue()
    if fmt == "md":
        lines = [header, ["---"] * len(header), *body]
        return "".join("| " + " | ".join(line) + " |\n" for line in lines)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in [header, *body]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["compare"], help="what to do with the cost records")
    parser.add_argument("--mlruns", type=Path, default=Path("mlruns"), help="MLflow store folder")
    parser.add_argument("--experiment", action="append", help="experiment name (repeatable)")
    parser.add_argument("--format", choices=["table", "csv", "json", "md"], default="table")


def run(args: argparse.Namespace) -> int:
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (args.mlruns / "mlflow.db").exists():
        raise UserError(f"{args.mlruns}: no MLflow store here (mlflow.db); pass --mlruns DIR")
    uri = tracking.tracking_uri(args.mlruns)
    try:
        runs = tracking.search_runs(uri, args.experiment)
    except Exception as exc:  # MLflow raises its own and requests' errors for a server that is down
        reason = tracking.refusal(exc) or (
            f"{type(exc).__name__}; start the tracking server or fix MLFLOW_TRACKING_URI"
        )
        raise UserError(f"{uri}: cannot read the MLflow runs: {reason}") from None
    table = rows(runs)
    # The table is this command's output, so it goes to stdout (logs go to stderr).
    sys.stdout.write(render(table, args.format))
    return 0
