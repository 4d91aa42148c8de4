"""The one runner behind every entry point: DVC stages and ``e2fgvi`` subcommands alike.

An entry-point module defines ``add_arguments(parser)`` and ``run(args) -> int | None``. A DVC
stage ends with ``if __name__ == "__main__": run_module(sys.modules[__name__])``; the ``e2fgvi``
command builds its subcommands from the same two functions and calls ``invoke``. Either way a
``UserError`` is one logged line and exit status 1 (2 is argparse's, for a usage error), Ctrl-C
is status 130, and nothing prints a stack trace for a problem the user can fix: a full disk, a
read-only folder or a missing permission that no writer turned into a ``UserError`` yet is one
line too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from types import ModuleType
from typing import NoReturn

from e2fgvi.errors import REFUSED, UserError, disk_error, one_line
from e2fgvi.logs import setup_logging

log = logging.getLogger("e2fgvi")

RunFn = Callable[[argparse.Namespace], "int | None"]


def summary(module: ModuleType) -> str:
    """The first line of a module's docstring: its help text."""
    return (module.__doc__ or module.__name__).strip().splitlines()[0]


def invoke(run: RunFn, args: argparse.Namespace) -> int:
    """Call ``run(args)``; a UserError (or a disk/permission OSError) is one line (status 1)."""
    try:
        return int(run(args) or 0)
    except UserError as exc:
        log.error("%s", one_line(exc))
        return REFUSED
    except OSError as exc:
        if (problem := disk_error(exc)) is None:
            raise
        log.error("%s", one_line(problem))
        return REFUSED
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def run_module(module: ModuleType, argv: list[str] | None = None) -> NoReturn:
    """Parse ``argv`` with the module's arguments, set up logging, run it and exit."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module.__spec__.name if module.__spec__ else module.__name__}",
        description=summary(module),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    sys.exit(invoke(module.run, args))
