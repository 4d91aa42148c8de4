"""DVC stage `train`: train E2FGVI on the prepared data; one process, or torchrun when asked.

With ``train.nproc_per_node`` or ``train.nnodes`` above 1 the stage relaunches itself under
torchrun (DDP); rerunning it resumes from the newest checkpoint of the same configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from e2fgvi.atomic import write_bytes, write_json
from e2fgvi.config import load_params
from e2fgvi.stages import run_stage
from e2fgvi.train.distributed import torchrun_command, under_torchrun
from e2fgvi.train.loop import TrainPaths, train

log = logging.getLogger("e2fgvi.stages.train")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared YouTube-VOS folder")
    parser.add_argument("--spynet", type=Path, required=True, help="pretrained SPyNet weights")
    parser.add_argument("--checkpoints", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--generator", type=Path, required=True, help="final generator weights")
    parser.add_argument("--cost-record", type=Path, required=True, help="the cost meter's record")
    parser.add_argument("--run-record", type=Path, required=True, help="MLflow run reference")
    parser.add_argument("--params-used", type=Path, required=True, help="params of this run")
    parser.add_argument("--mlruns", type=Path, required=True, help="MLflow store folder")
    parser.add_argument("--metrics", type=Path, required=True, help="DVC metrics JSON")
    parser.add_argument("--plots", type=Path, required=True, help="DVC loss-curve CSV")
    args = parser.parse_args(argv)
    params = load_params()
    cfg = params.train
    if (cfg.nproc_per_node > 1 or cfg.nnodes > 1) and not under_torchrun():
        command = torchrun_command(
            cfg.nproc_per_node, cfg.nnodes, "e2fgvi.stages.train", [*(argv or sys.argv[1:])]
        )
        log.info("launching %s", " ".join(command))
        os.execvp(command[0], command)
    spynet = args.spynet if params.model.spynet_init == "pretrained" else None
    paths = TrainPaths(
        frames=args.data / "JPEGImages",
        index=args.data / "train.json",
        spynet=spynet,
        checkpoints=args.checkpoints,
        generator=args.generator,
        cost_record=args.cost_record,
        run_record=args.run_record,
        params_used=args.params_used,
        mlruns=args.mlruns,
    )
    figures = train(params, paths)
    if figures is None:  # not rank 0
        return
    write_json(args.metrics, figures)
    history = paths.folder(params) / "history.csv"
    write_bytes(args.plots, history.read_bytes())
    log.info("trained %d iterations; metrics in %s", cfg.iterations, args.metrics)


if __name__ == "__main__":
    run_stage(main)
