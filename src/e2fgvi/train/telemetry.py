"""What training reports: loss averages, the resumable loss history, and the MLflow run.

The run gets a name and source tags (``e2fgvi.tracking.source``), the prepared data set as its
input, MLflow's system metrics while training, and sample strips as stepped images.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from e2fgvi import tracking
from e2fgvi.atomic import write_text
from e2fgvi.config import DataParams, Params, flatten, precision_of
from e2fgvi.data.lineage import data_label, prepared_dataset
from e2fgvi.train.distributed import World, broadcast_object, node_rank

log = logging.getLogger(__name__)

# The run's Source in the MLflow UI (``mlflow.source.name``): the train stage's entry point.
TRAIN_SOURCE = "src/e2fgvi/stages/train.py"


class Averager:
    """Means of tensor values since the last ``pop`` (kept on the device: no per-step sync)."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: dict[str, Tensor]) -> None:
        for key, value in values.items():
            value = value.detach().float()
            if key in self._sums:
                self._sums[key] = self._sums[key] + value
            else:
                self._sums[key] = value.clone()
            self._counts[key] = self._counts.get(key, 0) + 1

    def pop(self) -> dict[str, float]:
        """The means as floats (one host sync), then reset."""
        means = {k: float(v.item()) / self._counts[k] for k, v in self._sums.items()}
        self._sums.clear()
        self._counts.clear()
        return means


class History:
    """The loss history as CSV beside the checkpoints, so it survives interruption and resume.

    A log appends one line (synced): 5,000 logs of a 500k-iteration run cost the same each, where
    rewriting the file would grow with the run. On resume, rows after the resumed iteration and a
    line cut short by a kill are dropped (the file is rewritten once): they are recomputed.
    """

    def __init__(self, path: Path, resumed_step: int) -> None:
        self.path = path
        self._fields: list[str] = []
        self._last: dict[str, Any] = {}
        if path.exists():
            rows, self._fields = _read_rows(path)
            kept = [r for r in rows if int(r["step"]) <= resumed_step]
            self._last = kept[-1] if kept else {}
            _write_rows(path, self._fields, kept)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row in the file (read back; the history is not kept in memory)."""
        return _read_rows(self.path)[0] if self.path.exists() else []

    def append(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if not set(row) <= set(self._fields):  # a new column: rewrite once with the wider header
            self._fields = list(dict.fromkeys([*self._fields, *row]))
            _write_rows(self.path, self._fields, [*self.rows, row])
        else:
            with self.path.open("a", newline="") as handle:
                _writer(handle, self._fields).writerow(row)
                handle.flush()
                os.fsync(handle.fileno())
        self._last = row

    def last(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._last.items() if v != ""}


def _writer(handle: Any, fields: list[str]) -> csv.DictWriter:
    return csv.DictWriter(handle, fieldnames=fields, restval="", lineterminator="\n")


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Complete rows (a line cut short by a kill has missing fields) and the header."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if None not in r and None not in r.values()]
        return rows, list(reader.fieldnames or [])


def _write_rows(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = _writer(buffer, fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _what_ran(params: Params, device_kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(step shape, schedule) of the run: the same ``config.*`` a profile run logs."""
    train = params.train
    devices = train.nproc_per_node * train.nnodes
    shape = {
        "variant": params.model.variant, "width": train.width, "height": train.height,
        "local_frames": train.num_local_frames, "ref_frames": train.num_ref_frames,
        "clips_per_device": max(train.batch_size // devices, 1),
        "precision": precision_of(train.amp, train.tf32),
    }  # fmt: skip
    schedule = {"devices": devices, "global_batch": train.batch_size,
                "iterations": train.iterations, "device_kind": device_kind}  # fmt: skip
    return shape, schedule


def _ran_sentence(params: Params, shape: dict[str, Any], schedule: dict[str, Any]) -> str:
    kind = schedule["device_kind"]
    return tracking.ran_sentence(
        {
            "variant": tracking.names.PAPER_NAMES.get(shape["variant"], shape["variant"]),
            "iterations": schedule["iterations"],
            "size": f"{shape['width']}x{shape['height']}",
            "devices": schedule["devices"],
            "device": "GPU" if kind == "cuda" else kind.upper(),
            "precision": shape["precision"],
            "global_batch": schedule["global_batch"],
            "data": data_label(params.data),
        }
    )


def open_run(
    params: Params,
    mlruns: Path,
    spool: Path,
    run_id: str | None,
    tags: dict[str, Any],
    device_kind: str = "cpu",
) -> tracking.RunLogger:
    """The experiment's MLflow run: created on a fresh start, re-attached on resume.

    Records an earlier session spooled while the server was down are sent first. A new run is
    named for what ran (unless named in params or by DVC), opens with a sentence saying so, and
    gets the params a comparison needs (``names.visible_params``; all of them are one artifact,
    ``config/params.json``).
    """
    shape, schedule = _what_ran(params, device_kind)
    label = tracking.names.run_label(shape, schedule["devices"], device_kind)
    logger = tracking.attach(
        tracking.tracking_uri(mlruns),
        run_id,
        spool,
        experiment=params.tracking.experiment,
        run_name=tracking.run_name(params.tracking.run_name, label=label),
        artifact_root=mlruns,
        retry_interval_s=params.tracking.retry_interval_s,
    )
    if logger.run_id is None:
        # A resumed run keeps the source it started from.
        logger.set_tags(tracking.source_tags(TRAIN_SOURCE))
        visible = tracking.names.visible_params(flatten(params))
        logger.log_params(visible | tracking.names.config_params(shape, schedule))
        dump = json.dumps(params.model_dump(mode="json"), indent=2)
        logger.log_text(dump, tracking.names.PARAMS_ARTIFACT)
        logger.set_note("ran", _ran_sentence(params, shape, schedule))
    logger.set_tags(tags)
    return logger


def run_record(logger: tracking.RunLogger) -> dict[str, Any]:
    """What later stages need to attach to the run (written to ``mlflow_run.json``)."""
    spool = logger.spool if logger.spool and logger.spool.exists() else None
    return {
        "run_id": logger.run_id,
        "uri": logger.uri,
        "spool": str(spool.resolve()) if spool else None,
    }


def log_checkpoint(logger: tracking.RunLogger, path: Path, enabled: bool) -> None:
    """The newest checkpoint as the run's artifact ``checkpoints/latest.pth``."""
    if not enabled:
        return
    # The logger snapshots the file (hard link, else copy) under the new name.
    logger.log_artifact(path, "checkpoints", name="latest.pth")


def log_training_data(
    run: tracking.RunLogger, lock: Path | None, root: Path, data: DataParams
) -> None:
    """The prepared data set (DVC hash from ``lock``) as the run's training input."""
    dataset = prepared_dataset(lock, root, data) if lock is not None else None
    if dataset is not None:
        run.log_dataset(dataset, context="training")


def start_system_metrics(
    run: tracking.RunLogger | None, params: Params, world: World, resumed: bool
) -> tracking.SystemMetrics | None:
    """MLflow's system metrics for this node, sampled by its local rank 0 (all ranks call it).

    Under multi-node training every node logs into rank 0's run under its own node id
    (``system/node_<n>/…``); a node other than rank 0's needs the run to exist at start.
    """
    interval = params.tracking.system_metrics_interval_s
    if interval <= 0:
        return None
    several = params.train.nnodes > 1
    if several and run is not None and run.run_id is None:
        run.flush()  # runs are made by the sender thread; the other nodes need the id now
    target = (run.run_id, run.uri) if run is not None else None
    if several:
        target = broadcast_object(target, world)
    if world.local_rank != 0:
        return None
    if run is None:
        if target is None or target[0] is None:
            log.info("system metrics of this node not logged: rank 0 had no MLflow run at start")
            return None
        run = tracking.RunLogger(uri=target[1], run_id=target[0])
    node = f"node_{node_rank()}" if several else None
    own = not world.is_main  # a node's own logger, closed when sampling stops
    monitor = tracking.SystemMetrics(run, interval, node, resume=resumed, own_logger=own)
    monitor.start()
    return monitor
