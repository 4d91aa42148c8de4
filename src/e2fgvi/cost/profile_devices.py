"""The profile's section "On other device kinds": the plan forecast per kind in the table.

On a GPU of a kind in the device table, one more step of the plan runs under the profiler and
its per-operator times (``operator_times.json``, logged with the profile's MLflow run, where
``e2fgvi forecast`` finds them later) calibrate every kind's row; elsewhere the rows are the
roofline's. Either way the step is counted on fake tensors, as ``e2fgvi forecast`` does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from e2fgvi.config import CostParams, Params
from e2fgvi.cost.device_forecast import Calibration, device_rows
from e2fgvi.cost.device_table import shipped_table
from e2fgvi.cost.forecast_devices import table_lines
from e2fgvi.cost.opcount import count_step
from e2fgvi.cost.optimes import record_operator_times
from e2fgvi.cost.plan import Plan, measured_params
from e2fgvi.train.profiling import make_training_step

log = logging.getLogger(__name__)


def profile_devices(
    plan_params: Params,
    plan: Plan,
    cfg: CostParams,
    device: torch.device,
    device_name: str,
    out: Path | None,
) -> tuple[list[str], list[Path]]:
    """Markdown lines of the section, and the operator-times file when one was written."""
    table = shipped_table()
    kind = table.lookup(device_name) if device.type == "cuda" else None
    calibration, paths = None, []
    if kind is not None and out is not None:
        step = make_training_step(
            measured_params(plan_params, plan_params.train.amp), device, plan.step.clips_per_device
        )
        times, path = record_operator_times(step, device, device_name, kind, plan.step, out)
        calibration, paths = Calibration(run_id="this profile", kind=kind, times=times), [path]
        del step
    base = count_step(plan_params, 1)
    rows = device_rows(
        base, table, cfg, plan.schedule, list(table.kinds), [plan.schedule.devices],
        plan_params.train.tf32, calibration,
    )  # fmt: skip
    intro = (
        f"The plan on {plan.schedule.devices} devices of each kind in the device table "
        "(`e2fgvi forecast` for other kinds and counts; docs/cost.md says how far to trust it)."
    )
    return [intro, "", *table_lines(rows)], paths
