"""``e2fgvi forecast``: the plan's cost on device kinds and counts you do not have, in seconds.

No training step runs: the plan's step is counted on fake tensors once, then priced per kind
from the device table, calibrated by a measured GPU profile in the MLflow store when one of the
plan's step exists, else by a roofline. Every figure is derived and says how.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from e2fgvi import tracking
from e2fgvi.config import load_params
from e2fgvi.cost.device_forecast import DeviceRow, device_rows
from e2fgvi.cost.device_table import load_table
from e2fgvi.cost.opcount import count_step
from e2fgvi.cost.optimes import find_calibration
from e2fgvi.cost.plan import load_plan
from e2fgvi.errors import UserError

log = logging.getLogger(__name__)

JSON_KEYS = ("target", "devices", "step_s", "wall_days", "device_hours", "kwh", "money", "fits")


def _list(text: str, flag: str, cast=str) -> list:
    try:
        items = [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected a comma-separated list (got {text!r})") from None
    if not items or (cast is int and min(items) < 1):
        raise UserError(f"{flag}: expected a comma-separated list of positive values")
    return items


def _cell(band, digits: str = ".3g") -> str:
    if band is None:
        return "-"
    return f"{band.mean:{digits}} ({band.low:{digits}}–{band.high:{digits}})"


def table_lines(rows: list[DeviceRow]) -> list[str]:
    """The rows as a Markdown table (mean and band per figure), then each row's basis."""
    currency = rows[0].currency if rows else ""
    lines = [
        "| device × n | clips/device | step (s) | wall (days) | device-hours | energy (kWh) "
        f"| money ({currency}) | memory/device (GiB) | fits one device | how |",
        "| " + " | ".join(["---"] * 10) + " |",
    ]
    bases = list(dict.fromkeys(row.basis for row in rows))
    for row in rows:
        lines.append(
            f"| {row.target} × {row.devices} | {row.clips_per_device} | {_cell(row.step_s)} | "
            f"{_cell(row.wall_days)} | {_cell(row.device_hours, '.4g')} | "
            f"{_cell(row.kwh, '.4g')} | "
            f"{_cell(row.money, '.4g')} | {_cell(row.memory_gb)} of {row.device_memory_gb:g} | "
            f"{row.fits} | derived [{bases.index(row.basis) + 1}] |"
        )
    lines += ["", "Every figure is *derived*, none measured; mean (band low–high). How:", ""]
    lines += [f"{i}. {basis}" for i, basis in enumerate(bases, 1)]
    notes = sorted({note for row in rows for note in row.notes})
    return lines + ([""] + [f"- {note}" for note in notes] if notes else [])


def json_rows(rows: list[DeviceRow]) -> list[dict]:
    """Rows for machines: the figures' means, their bands, and the basis."""
    out = []
    for row in rows:
        data = row.model_dump(mode="json")
        flat = {
            key: data[key]["mean"] if isinstance(data[key], dict) else data[key]
            for key in JSON_KEYS
        }
        flat |= {
            f"{key}_band": [data[key]["low"], data[key]["high"]]
            for key in JSON_KEYS[2:7]
            if data[key]
        }
        out.append(flat | {"basis": row.basis, "derived": True, "row": data})
    return out


def forecast_plan(
    plan_path: Path,
    params_path: Path,
    targets: list[str] | None,
    counts: list[int] | None,
    table_path: Path | None = None,
    mlruns: Path | None = None,
    not_from: str | None = None,
) -> list[DeviceRow]:
    """Rows for ``targets`` x ``counts`` (defaults: every kind, the plan's device count)."""
    params = load_params(params_path)
    table = load_table(table_path)
    plan_params, plan = load_plan(plan_path)
    for target in targets or []:
        table.kind(target)
    calibration = None
    if mlruns is not None and tracking.store_dir(mlruns).exists():
        uri = tracking.tracking_uri(mlruns)
        calibration = find_calibration(uri, plan.step, table, exclude=not_from)
    log.info("counting one step of %s on fake tensors", plan_path)
    base = count_step(plan_params, 1)
    return device_rows(
        base,
        table,
        params.cost,
        plan.schedule,
        targets or list(table.kinds),
        counts or [plan.schedule.devices],
        plan_params.train.tf32,
        calibration,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plan",
        type=Path,
        default=Path("params.official.yaml"),
        help="the params file you will train with",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="prices (cost.price_per_device_hour, price_per_kwh, currency)",
    )
    parser.add_argument(
        "--target", help="device kinds, comma-separated (default: every kind in the table)"
    )
    parser.add_argument("--devices", help="device counts, comma-separated (default: the plan's)")
    parser.add_argument(
        "--device-table", type=Path, help="a devices.yaml adding or replacing kinds"
    )
    parser.add_argument(
        "--mlruns",
        type=Path,
        default=Path("mlruns"),
        help="MLflow store searched for a GPU profile to calibrate from",
    )
    parser.add_argument(
        "--no-calibrate", action="store_true", help="roofline only, even when a profile exists"
    )
    parser.add_argument(
        "--not-from", help="do not calibrate from profiles of this kind (to test the calibration)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows")


def run(args: argparse.Namespace) -> int:
    rows = forecast_plan(
        args.plan,
        args.params,
        _list(args.target, "--target") if args.target else None,
        _list(args.devices, "--devices", int) if args.devices else None,
        args.device_table,
        None if args.no_calibrate else args.mlruns,
        args.not_from,
    )
    # The table is this command's output, so it goes to stdout (logs go to stderr).
    if args.json:
        sys.stdout.write(json.dumps(json_rows(rows), indent=1) + "\n")
    else:
        sys.stdout.write(
            f"Forecast of {args.plan} per device kind\n\n" + "\n".join(table_lines(rows)) + "\n"
        )
    return 0
