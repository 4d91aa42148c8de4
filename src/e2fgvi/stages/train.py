"""DVC stage `train`: train E2FGVI on the prepared data; one process, or torchrun when asked.

With ``train.nproc_per_node`` or ``train.nnodes`` above 1 (or ``train.max_restarts`` above 0) the
stage relaunches itself under torchrun (DDP); rerunning it, or a torchrun restart, resumes from the
newest checkpoint of the same configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from e2fgvi.atomic import write_bytes, write_json
from e2fgvi.config import load_params
from e2fgvi.entry import run_module
from e2fgvi.train.distributed import launch, needs_torchrun, torchrun_command, under_torchrun
from e2fgvi.train.loop import train
from e2fgvi.train.session import TrainPaths, sigterm_interrupts

log = logging.getLogger("e2fgvi.stages.train")

# Every path flag of the stage: (flag, help); all are required, all are written in dvc.yaml.
_PATHS = (
    ("--data", "prepared YouTube-VOS folder"),
    ("--spynet", "pretrained SPyNet weights"),
    ("--checkpoints", "checkpoint folder"),
    ("--generator", "final generator weights"),
    ("--cost-record", "the cost meter's record"),
    ("--run-record", "MLflow run reference"),
    ("--params-used", "params of this run"),
    ("--mlruns", "MLflow store folder"),
    ("--metrics", "DVC metrics JSON"),
    ("--plots", "DVC loss-curve CSV"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, text in _PATHS:
        parser.add_argument(flag, type=Path, required=True, help=text)
    parser.add_argument(
        "--dvc-lock", type=Path, default=None, help="dvc.lock: the data's DVC hash for MLflow"
    )


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line that gave ``args`` (what every torchrun process parses again)."""
    argv = ["-v"] if getattr(args, "verbose", False) else []
    for flag, _ in _PATHS:
        argv += [flag, str(getattr(args, flag[2:].replace("-", "_")))]
    if args.dvc_lock is not None:
        argv += ["--dvc-lock", str(args.dvc_lock)]
    return argv


def run(args: argparse.Namespace) -> int | None:
    params = load_params()
    cfg = params.train
    if needs_torchrun(cfg) and not under_torchrun():
        module = "e2fgvi.stages.train"
        command = torchrun_command(
            cfg.nproc_per_node, cfg.nnodes, module, _argv(args), cfg.max_restarts
        )
        log.info("launching %s", " ".join(command))
        return launch(command)
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
        dvc_lock=args.dvc_lock,
    )
    with sigterm_interrupts():  # a SIGTERM ends the MLflow run KILLED, as Ctrl-C does
        figures = train(params, paths)
    if figures is None:  # not rank 0
        return None
    write_json(args.metrics, figures)
    history = paths.folder(params) / "history.csv"
    write_bytes(args.plots, history.read_bytes())
    log.info("trained %d iterations; metrics in %s", cfg.iterations, args.metrics)
    return None


if __name__ == "__main__":
    run_module(sys.modules[__name__])
