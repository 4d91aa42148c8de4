"""DVC stage `profile`: time real training steps here and forecast the full schedule.

The same as `e2fgvi profile` (both call e2fgvi.cost.profile.run_profile): a warm-up plus a few
measured E2FGVI iterations at the configured size, the forecast for `cost.forecast` (500k
iterations on 8 GPUs by default) and, on a GPU, the largest clips per GPU that fit. Logged as its
own MLflow run (tag cost.kind=profile) and written as DVC metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2fgvi.config import load_params
from e2fgvi.cost.profile import run_profile
from e2fgvi.entry import run_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mlruns", type=Path, required=True, help="MLflow store folder")
    parser.add_argument("--out", type=Path, required=True, help="report JSON (DVC metrics)")


def run(args: argparse.Namespace) -> None:
    params = load_params()
    run_profile(params, params.cost, args.mlruns, out=args.out)


if __name__ == "__main__":
    run_module(sys.modules[__name__])
