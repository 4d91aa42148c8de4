"""The ``e2fgvi`` command: one subcommand per user task, each an entry-point module.

Every subcommand module defines ``add_arguments(parser)`` and ``run(args)``; only the chosen one
is imported (so ``e2fgvi --help`` stays fast) and it runs through ``e2fgvi.entry.invoke``, as the
DVC stages do through ``run_module``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys

from e2fgvi import __version__
from e2fgvi.entry import invoke
from e2fgvi.errors import USAGE
from e2fgvi.logs import setup_logging

DESCRIPTION = (
    "Check this machine, inpaint videos with a trained E2FGVI model, measure and compare "
    "what training it costs, and verify that a rerun reproduces the committed results. The "
    "training pipeline itself runs with 'dvc repro'."
)

# name -> (entry-point module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("e2fgvi.doctor", "check torch/CUDA/NVML/DVC/MLflow and the pretrained files"),
    "profile": (
        "e2fgvi.cost.profile",
        "measure a few training steps here and forecast the full run",
    ),
    "forecast": (
        "e2fgvi.cost.forecast_devices",
        "forecast the plan on GPUs you do not have (no steps run)",
    ),
    "cost": ("e2fgvi.cost.compare", "compare the measured cost of experiments across MLflow runs"),
    "inpaint": ("e2fgvi.eval.inpaint", "remove masked objects from a video with a checkpoint"),
    "verify": ("e2fgvi.verify", "rerun the pipeline, compare with the committed metrics"),
}
_VERBOSE = ("-v", "--verbose")


def package_version() -> str:
    """The installed distribution's version; the source tree's when it is not installed."""
    try:
        return importlib.metadata.version("e2fgvi-repro")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def build_parser(
    chosen: str | None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each command's subparser; only ``chosen``'s module adds its arguments."""
    parser = argparse.ArgumentParser(
        prog="e2fgvi",
        description=DESCRIPTION,
        epilog="'e2fgvi COMMAND --help' lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"e2fgvi {package_version()}")
    parser.add_argument(*_VERBOSE, action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {}
    for name, (module, summary) in COMMANDS.items():
        command = commands[name] = sub.add_parser(name, help=summary, description=summary)
        # SUPPRESS: an absent -v after the command must not reset one given before it.
        command.add_argument(
            *_VERBOSE, action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
        if name == chosen:
            importlib.import_module(module).add_arguments(command)
    return parser, commands


def missing_action_hint(command: argparse.ArgumentParser, name: str) -> str | None:
    """What to type when a command whose first argument is an action is run alone, else None.

    (argparse alone answers "the following arguments are required: action".)
    """
    # argparse has no public list of a parser's arguments; _actions has been stable for decades.
    positional = [a for a in command._actions if not a.option_strings and a.required]
    if not positional or not positional[0].choices:
        return None
    choices = list(positional[0].choices)
    return (
        f"{command.format_usage()}e2fgvi {name}: say what to do: {' | '.join(choices)} "
        f"(e.g. 'e2fgvi {name} {choices[0]}'; 'e2fgvi {name} --help' lists the options)\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser, commands = build_parser(chosen if chosen in COMMANDS else None)
    rest = [a for a in argv if a != chosen and a not in _VERBOSE]
    if chosen is None and not rest:
        sys.stderr.write(
            f"{parser.format_usage()}e2fgvi: choose a command; 'e2fgvi --help' lists them\n"
        )
        return USAGE
    if chosen in COMMANDS and not rest:
        hint = missing_action_hint(commands[chosen], chosen)
        if hint:
            sys.stderr.write(hint)
            return USAGE
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    return invoke(importlib.import_module(COMMANDS[args.command][0]).run, args)


if __name__ == "__main__":
    sys.exit(main())
