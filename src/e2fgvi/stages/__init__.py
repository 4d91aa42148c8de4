"""One short entry point per DVC stage: ``python -m e2fgvi.stages.<name>``.

Paths arrive as command-line arguments written in dvc.yaml; hyperparameters come from
params.yaml through ``e2fgvi.config``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from e2fgvi.errors import UserError, one_line
from e2fgvi.logs import setup_logging


def run_stage(main: Callable[[list[str] | None], None]) -> None:
    """Run a stage's ``main`` with logging set up; a UserError exits 2 with one line."""
    setup_logging()
    try:
        main(None)
    except UserError as exc:
        logging.getLogger("e2fgvi").error("%s", one_line(exc))
        sys.exit(2)
