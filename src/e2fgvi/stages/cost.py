"""DVC stage ``cost``: what the training run cost, measured, as a report for people and machines.

Reads the meter's gathered record and the run's own params dump, writes the report (flat DVC
metrics, the whole report as JSON and Markdown, CSV data plots) and logs the same into the
experiment's MLflow run. Only a run that stopped before its ``train.iterations`` also gets a
forecast (of its whole schedule); what another plan would cost is ``profile``'s report.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from e2fgvi import tracking
from e2fgvi.config import load_params
from e2fgvi.cost.forecast import Schedule
from e2fgvi.cost.mfu import precision_of
from e2fgvi.cost.publish import log_report, switches, used_train_params
from e2fgvi.cost.report import write_report
from e2fgvi.cost.summary import build_report
from e2fgvi.entry import run_module
from e2fgvi.measure.record import read_record

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--record", type=Path, required=True, help="the train stage's cost record")
    parser.add_argument("--run", type=Path, required=True, help="the train stage's mlflow_run.json")
    parser.add_argument("--params-used", type=Path, required=True, help="params the run used")
    parser.add_argument("--mlruns", type=Path, required=True, help="MLflow store folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    record = read_record(args.record)
    train = used_train_params(args.params_used)
    run_id, recorded_uri, spool = tracking.read_run_reference(args.run)

    rng = np.random.default_rng(params.seed)
    schedule = Schedule(
        iterations=train.iterations,
        devices=train.nproc_per_node * train.nnodes,
        global_batch=train.batch_size,
    )
    precision = precision_of(train.amp, train.tf32)
    report = build_report(record, params.cost, precision, rng, schedule)
    report = report.model_copy(update={"conditions": {**report.conditions, **switches(train)}})
    paths = write_report(args.out, report, record.ranks)
    log.info("cost report written to %s", args.out)

    logger = tracking.attach(tracking.stage_uri(args.mlruns, recorded_uri), run_id, spool)
    log_report(logger, report, [*paths, args.record], kind="train", cfg=params.cost)
    logger.close()


if __name__ == "__main__":
    run_module(sys.modules[__name__])
