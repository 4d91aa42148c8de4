"""DVC stage ``cost``: what the training run cost, its full-schedule forecast, the report.

Reads the meter's gathered record and the run's own params dump, writes the JSON/Markdown
report and plots (DVC metrics and plots) and logs the same into the experiment's MLflow run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from e2fgvi import tracking
from e2fgvi.config import load_params
from e2fgvi.cost.mfu import precision_of
from e2fgvi.cost.publish import log_report, read_json, switches, used_train_params
from e2fgvi.cost.report import write_report
from e2fgvi.cost.summary import build_report
from e2fgvi.measure.record import as_gathered
from e2fgvi.stages import run_stage

log = logging.getLogger(__name__)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--record", type=Path, required=True, help="cost_raw.json of the train stage")
parser.add_argument("--run", type=Path, required=True, help="mlflow_run.json of the train stage")
parser.add_argument("--params-used", type=Path, required=True, help="params the run used")
parser.add_argument("--mlruns", type=Path, required=True, help="MLflow store folder")
parser.add_argument("--out", type=Path, required=True, help="report folder")
parser.add_argument("--params", type=Path, default=Path("params.yaml"))


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    params = load_params(args.params)
    raw = read_json(args.record, "the train stage writes it")
    gathered = as_gathered(raw, str(args.record))
    train = used_train_params(args.params_used)
    run_id, recorded_uri, spool = tracking.read_run_reference(args.run)

    rng = np.random.default_rng(params.seed)
    report = build_report(gathered, params.cost, precision_of(train.amp, train.tf32), rng)
    report["conditions"] = {**report["conditions"], **switches(train)}
    paths = write_report(args.out, report, gathered["ranks"])
    log.info("cost report written to %s", args.out)

    logger = tracking.attach(tracking.stage_uri(args.mlruns, recorded_uri), run_id, spool)
    log_report(logger, report, [*paths, args.record], kind="train")
    logger.close()


if __name__ == "__main__":
    run_stage(main)
