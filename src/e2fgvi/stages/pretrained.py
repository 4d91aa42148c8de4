"""DVC stage pretrained: the SPyNet and I3D weight files, under their original names.

Each of ``data.pretrained.spynet`` / ``.i3d`` is fetched when ``fetch`` is true; ``url`` may also
be a local path (a file you downloaded by hand). ``manifest.json`` records what was fetched or
skipped, so the folder exists even when nothing is fetched (the sample profile).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2fgvi.atomic import write_json
from e2fgvi.config import load_params
from e2fgvi.data.download import fetch_weight
from e2fgvi.entry import run_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="folder for the weight files")
    parser.add_argument("--spynet", required=True, type=Path, help="where the SPyNet file goes")
    parser.add_argument("--i3d", required=True, type=Path, help="where the I3D file goes")
    parser.add_argument(
        "--partial-dir", required=True, type=Path, help="where partial downloads wait to be resumed"
    )


def run(args: argparse.Namespace) -> None:
    data = load_params().data
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {
        "spynet": (data.pretrained.spynet, args.spynet),
        "i3d": (data.pretrained.i3d, args.i3d),
    }
    manifest = {
        key: fetch_weight(key, item, dest, data.http, args.partial_dir)
        for key, (item, dest) in weights.items()
    }
    write_json(args.out / "manifest.json", manifest)


if __name__ == "__main__":
    run_module(sys.modules[__name__])
