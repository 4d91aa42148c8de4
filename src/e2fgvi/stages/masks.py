"""DVC stage masks: fixed evaluation masks for the test split, one zip of PNGs per video.

Each video's masks come from a generator seeded by (``masks.eval_seed``, video id), so adding or
removing videos never changes another video's masks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2fgvi.config import load_params
from e2fgvi.data.frames import load_index
from e2fgvi.data.masks import write_eval_masks
from e2fgvi.entry import run_module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, type=Path, help="test.json (video id -> frames)")
    parser.add_argument("--out", required=True, type=Path, help="test_masks folder (<video>.zip)")


def run(args: argparse.Namespace) -> None:
    cfg = load_params().masks
    write_eval_masks(load_index(args.index), args.out, cfg)


if __name__ == "__main__":
    run_module(sys.modules[__name__])
