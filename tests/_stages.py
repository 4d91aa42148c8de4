"""Test helper: run an entry-point module's ``run`` on an argument list, in this process.

Unlike ``e2fgvi.entry.run_module`` it neither sets up logging nor exits, so a test sees the
``UserError`` itself (the one-line/exit-status path is tested through a subprocess).
"""

from __future__ import annotations

import argparse
from types import ModuleType


def call_stage(module: ModuleType, argv: list[str]) -> int | None:
    """Parse ``argv`` with the module's ``add_arguments`` and call its ``run``."""
    parser = argparse.ArgumentParser(prog=module.__name__)
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))
