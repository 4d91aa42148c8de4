"""Logging set-up for entry points; library code only calls ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import os
import sys
import warnings


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr; under DDP only rank 0 logs below WARNING."""
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        level = max(level, logging.WARNING)
    prefix = f"[rank {rank}] " if "RANK" in os.environ else ""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    # Third-party chatter that says nothing to our user.
    for name in ("alembic", "mlflow.store.db.utils", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
