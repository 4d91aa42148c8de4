"""DVC stage prepare: release archives -> one zip per video + train.json / test.json."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from e2fgvi.atomic import write_json
from e2fgvi.config import load_params
from e2fgvi.data.prepare import prepare_dataset
from e2fgvi.entry import run_module
from e2fgvi.metricsfile import flat_numbers

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", required=True, type=Path, help="folder with the release archives")
    parser.add_argument("--out", required=True, type=Path, help="the youtube-vos dataset folder")
    parser.add_argument("--report", required=True, type=Path, help="data figures (DVC metrics)")
    parser.add_argument("--details", required=True, type=Path, help="the whole data report")


def run(args: argparse.Namespace) -> None:
    params = load_params()
    clip_frames = params.train.num_local_frames + params.train.num_ref_frames
    start = time.perf_counter()
    report = prepare_dataset(args.raw, args.out, params.prepare, min_train_frames=clip_frames)
    write_json(args.report, flat_numbers(report, skip={"resolutions"}))
    write_json(args.details, report)
    log.info("prepared in %.1f s; report %s", time.perf_counter() - start, args.report)


if __name__ == "__main__":
    run_module(sys.modules[__name__])
