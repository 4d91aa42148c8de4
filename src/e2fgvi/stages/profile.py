"""DVC stage `profile`: time real training steps of the plan here and forecast what it costs.

The same as `e2fgvi profile --plan PLAN` (both call e2fgvi.cost.profile.run_profile): a warm-up
plus a few measured training steps of the plan's model configuration (the plan file is the
dvc.yaml var `plan`, params.official.yaml: E2FGVI at 432x240, 5+3 frames, batch 8 on 8 devices,
fp32, 500k iterations), the plan's forecast and budget table beside what was measured and, on a
GPU, the largest clips per device that fit; then the speed switches of `cost.switches` that apply
on this device, timed against fp32 with a recommendation (e2fgvi.cost.switches). The window,
prices and peaks come from params.yaml (`cost`). Logged as its own MLflow run (tag
cost.kind=profile).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2fgvi.config import load_params
from e2fgvi.cost.plan import load_plan
from e2fgvi.cost.profile import run_profile
from e2fgvi.entry import run_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="the plan's params file")
    parser.add_argument("--mlruns", type=Path, required=True, help="MLflow store folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder")


def run(args: argparse.Namespace) -> None:
    run_profile(load_params(), load_plan(args.plan), args.mlruns, out=args.out)


if __name__ == "__main__":
    run_module(sys.modules[__name__])
