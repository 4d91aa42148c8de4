"""``e2fgvi cost compare``: cost, and quality per cost, across MLflow runs and experiments.

The default table puts each run's measured and forecast cost side by side; ``--quality`` puts
quality next to cost: PSNR and SSIM beside device-hours and money, whether the run is on the
frontier (no other run of the same device kind reached a higher PSNR for fewer device-hours),
and, along the frontier, the PSNR gained per extra device-hour over the next cheaper frontier
run. PSNR is logarithmic, so PSNR ÷ hours means nothing; a difference of PSNR (dB, a ratio of
errors) per difference of hours is the marginal return of spending more.

Device-hours are hours of the device kind the run measured (``kind`` column): GPU-hours and CPU
device-hours are never mixed on one frontier. Runs are read through MLflow's search API page by
page, so nothing is cut at a page size.
"""

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

COST_COLUMNS = (
    ("experiment", "experiment"),
    ("run", "run"),
    ("kind", "kind"),
    ("device_kind", "device kind"),
    ("device", "device"),
    ("devices", "devices"),
    ("clips_per_s_per_device", "clips/s per device"),
    ("device_hours_per_1k_iter", "device-h per 1k it"),
    ("device_hours", "device-h"),
    ("money", "money"),
    ("forecast_wall_h", "forecast wall h"),
    ("forecast_device_hours", "forecast device-h"),
    ("forecast_money", "forecast money"),
    ("psnr", "PSNR"),
    ("ssim", "SSIM"),
)
QUALITY_COLUMNS = (
    ("experiment", "experiment"),
    ("run", "run"),
    ("device_kind", "device kind"),
    ("device", "device"),
    ("device_hours", "device-h"),
    ("money", "money"),
    ("psnr", "PSNR"),
    ("ssim", "SSIM"),
    ("frontier", "frontier"),
    ("db_per_extra_device_hour", "dB per extra device-h"),
)
# The figures the tables show, by record field name (``tracking.names`` reads them back).
_FIGURES = (
    "devices", "clips_per_s_per_device", "device_hours_per_1k_iter", "device_hours", "money",
    "forecast_wall_h", "forecast_device_hours", "forecast_money", "psnr", "ssim",
)  # fmt: skip
_MONEY = ("money", "forecast_money")


def rows(runs: list[tracking.RunRecord]) -> list[dict[str, Any]]:
    """One row per run that has any cost or evaluation figure."""
    table = []
    for run in runs:
        every = tracking.names.run_figures(run.metrics, run.params)
        values = {key: every[key] for key in _FIGURES}
        if all(v is None for v in values.values()):
            continue
        table.append(
            {
                "experiment": run.experiment,
                "run": run.run_name or run.run_id[:8],
                "run_id": run.run_id,
                "kind": run.tags.get("cost.kind", ""),
                "device_kind": run.tags.get("cost.device_kind", ""),
                "device": run.tags.get("cost.device", ""),
                "currency": run.tags.get("cost.currency") or run.params.get("cost.currency", ""),
                **values,
                "devices": int(values["devices"]) if values["devices"] is not None else None,
            }
        )
    return table


def _dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a`` costs no more device-hours and scores no lower PSNR than ``b``, and differs."""
    cheaper, better = a["device_hours"] <= b["device_hours"], a["psnr"] >= b["psnr"]
    return cheaper and better and (a["device_hours"], a["psnr"]) != (b["device_hours"], b["psnr"])


def quality_rows(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs with both PSNR and device-hours, cheapest first, each marked on the frontier or not.

    The frontier is per device kind: hours of different kinds are not comparable.
    """
    scored = [r for r in table if r["psnr"] is not None and r["device_hours"] is not None]
    marked = []
    for row in scored:
        peers = [r for r in scored if r["device_kind"] == row["device_kind"]]
        frontier = not any(_dominates(other, row) for other in peers)
        marked.append({**row, "frontier": "yes" if frontier else "no"})
    ordered = sorted(marked, key=lambda r: (r["device_kind"], r["device_hours"], -r["psnr"]))
    return _marginal_gains(ordered)


def _marginal_gains(ordered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dB per extra device-hour from the next cheaper frontier run of the same kind (frontier
    rows only; None for the cheapest, and off the frontier)."""
    previous: dict[str, dict[str, Any]] = {}
    out = []
    for row in ordered:
        gain = None
        if row["frontier"] == "yes":
            before = previous.get(row["device_kind"])
            if before is not None and row["device_hours"] > before["device_hours"]:
                extra = row["device_hours"] - before["device_hours"]
                gain = (row["psnr"] - before["psnr"]) / extra
            previous[row["device_kind"]] = row
        out.append({**row, "db_per_extra_device_hour": gain})
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(table: list[dict[str, Any]], fmt: str, columns=COST_COLUMNS) -> str:
    """The table as text (aligned), csv, json or md."""
    if fmt == "json":
        return json.dumps(table, indent=2) + "\n"
    header = [title for _, title in columns]
    body = []
    for row in table:
        line = [_cell(row[key]) for key, _ in columns]
        for i, (key, _) in enumerate(columns):
            if key in _MONEY and row[key] is not None and row["currency"]:
                line[i] += f" {row['currency']}"
        body.append(line)
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
    parser.add_argument(
        "--experiment", action="append", help="experiment name (repeatable; default: all)"
    )
    parser.add_argument(
        "--quality",
        action="store_true",
        help="quality beside cost: the frontier and dB gained per extra device-hour along it",
    )
    parser.add_argument("--format", choices=["table", "csv", "json", "md"], default="table")
    parser.add_argument(
        "--page-size",
        type=int,
        default=tracking.PAGE_SIZE,
        help="runs per MLflow search request (all pages are read)",
    )


def run(args: argparse.Namespace) -> int:
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (args.mlruns / "mlflow.db").exists():
        raise UserError(f"{args.mlruns}: no MLflow store here (mlflow.db); pass --mlruns DIR")
    if args.page_size < 1:
        raise UserError("--page-size must be positive")
    uri = tracking.tracking_uri(args.mlruns)
    try:
        runs = tracking.search_runs(uri, args.experiment, page_size=args.page_size)
    except Exception as exc:  # MLflow raises its own and requests' errors for a server that is down
        reason = tracking.refusal(exc) or (
            f"{type(exc).__name__}; start the tracking server or fix MLFLOW_TRACKING_URI"
        )
        raise UserError(f"{uri}: cannot read the MLflow runs: {reason}") from None
    table = rows(runs)
    if args.quality:
        text = render(quality_rows(table), args.format, QUALITY_COLUMNS)
    else:
        text = render(table, args.format)
    # The table is this command's output, so it goes to stdout (logs go to stderr).
    sys.stdout.write(text)
    return 0
