"""The ``e2fgvi`` command: one subcommand per user task, each implemented in its own module.

Every subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is imported
only when chosen, so ``e2fgvi --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from e2fgvi.errors import UserError, one_line
from e2fgvi.logs import setup_logging

log = logging.getLogger("e2fgvi")

COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("e2fgvi.doctor", "check torch/CUDA/NVML/DVC/MLflow and the pretrained files"),
    "profile": (
        "e2fgvi.cost.profile",
        "measure a few training steps here and forecast the full run",
    ),
    "cost": ("e2fgvi.cost.compare", "compare the measured cost of experiments across MLflow runs"),
    "inpaint": ("e2fgvi.eval.inpaint", "remove masked objects from a video with a checkpoint"),
}


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2fgvi", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        if name == chosen:
            importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except UserError as exc:
        log.error("%s", one_line(exc))
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
