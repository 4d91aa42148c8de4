"""DVC stage `profile`: time real training steps here and forecast the full schedule.

The same as `e2fgvi profile` (see e2fgvi.cost.profile): a warm-up plus a few measured E2FGVI
iterations at the configured size, the forecast for `cost.forecast` (500k iterations on 8 GPUs
by default) and, on a GPU, the largest clips per GPU that fit. Logged as its own MLflow run
(tag cost.kind=profile) and written as DVC metrics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from e2fgvi.cost import profile
from e2fgvi.stages import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlruns", type=Path, required=True, help="MLflow store folder")
    parser.add_argument("--out", type=Path, required=True, help="report JSON (DVC metrics)")
    args = parser.parse_args(argv)
    options = argparse.Namespace(
        params=Path("params.yaml"),
        mlruns=args.mlruns,
        out=args.out,
        gpus=None,
        iterations=None,
        global_batch=None,
        no_track=False,
    )
    profile.run(options)


if __name__ == "__main__":
    run_stage(main)
