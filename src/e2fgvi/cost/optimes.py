"""Measured time per operator of one training step, and where a forecast finds one.

``measure_operator_times`` runs a step (after one untimed step) under ``torch.profiler`` and sums,
per ATen operator name, the time of its outermost calls (device time on a GPU, CPU time on a
CPU), so an operator called inside another is not counted twice. ``e2fgvi profile`` on a GPU
stores the result as ``cost/operator_times.json`` in its MLflow run; ``find_calibration`` reads
the newest such run whose measured step is the plan's (clips apart) to calibrate forecasts.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch.profiler import ProfilerActivity, profile

from e2fgvi import tracking
from e2fgvi.atomic import write_json
from e2fgvi.cost.device_forecast import Calibration
from e2fgvi.cost.device_table import DeviceTable
from e2fgvi.cost.plan import StepShape
from e2fgvi.cost.roofline import OperatorTimes

log = logging.getLogger(__name__)

ARTIFACT = "cost/operator_times.json"
# What must be equal for one step's operator times to stand for another's (clips scale).
SAME = ("variant", "width", "height", "local_frames", "ref_frames", "precision", "discriminator")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_operator_times(step_fn, device: torch.device) -> tuple[float, dict[str, float]]:
    """(wall seconds of the profiled step, seconds per ATen operator name, outermost calls)."""
    step_fn()  # untimed: first-call work (cudnn autotuning, allocator growth)
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step_fn()
        _sync(device)
        wall = time.perf_counter() - start
    times: dict[str, float] = {}
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is not None:
            continue
        us = event.device_time_total if device.type == "cuda" else event.cpu_time_total
        name = event.name.removeprefix("aten::")
        times[name] = times.get(name, 0.0) + us * 1e-6
    return wall, times


def record_operator_times(
    step_fn, device: torch.device, device_name: str, kind: str, shape: StepShape, out: Path
) -> tuple[OperatorTimes, Path]:
    """Measure and write ``operator_times.json`` into ``out``; returns the record and path."""
    wall, times = measure_operator_times(step_fn, device)
    record = OperatorTimes(
        device_name=device_name,
        kind=kind,
        clips_per_device=shape.clips_per_device,
        step_s=wall,
        op_s=times,
    )
    path = out / Path(ARTIFACT).name
    write_json(path, {**record.model_dump(), "step": shape.model_dump()})
    log.info(
        "operator times of one step on %s: %d operators, %.3g s", device_name, len(times), wall
    )
    return record, path


def _matches(step: dict[str, Any], shape: StepShape) -> bool:
    return all(step.get(key) == getattr(shape, key) for key in SAME)


def find_calibration(
    uri: str, shape: StepShape, table: DeviceTable, exclude: str | None = None, limit: int = 200
) -> Calibration | None:
    """The newest profile run with operator times of ``shape``'s step on a kind in ``table``
    other than ``exclude``."""
    for run in tracking.search_runs(uri)[:limit]:
        text = tracking.artifact_text(uri, run.run_id, ARTIFACT)
        if text is None:
            continue
        try:
            raw = json.loads(text)
            times = OperatorTimes.model_validate({k: v for k, v in raw.items() if k != "step"})
        except (json.JSONDecodeError, ValidationError, AttributeError):
            log.warning("run %s: %s is not an operator-times record; skipped", run.run_id, ARTIFACT)
            continue
        kind = table.lookup(times.device_name)
        if kind is not None and kind != exclude and _matches(raw.get("step") or {}, shape):
            return Calibration(run_id=run.run_id, kind=kind, times=times)
    return None
