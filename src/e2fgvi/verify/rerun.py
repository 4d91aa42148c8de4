"""The DVC side of ``e2fgvi verify``: rerun the pipeline as an experiment, diff its metrics.

The rerun is ``dvc exp run --temp --force``: every stage runs again in a temporary copy of the
workspace, so the workspace's own outputs and committed reports are never overwritten, and the
result stays available as a named experiment (``dvc exp show``, ``dvc exp apply NAME``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2fgvi.errors import UserError

log = logging.getLogger(__name__)


def _dvc(*args: str) -> list[str]:
    """DVC from the same environment as this package (its venv's ``python -m dvc``)."""
    return [sys.executable, "-m", "dvc", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


def default_name() -> str:
    return datetime.now(UTC).strftime("verify-%Y%m%d-%H%M%S")


def uncommitted_changes(root: Path) -> list[str]:
    """Tracked files with uncommitted changes (they become part of the rerun)."""
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise UserError(f"{root}: not a git repository (verify compares with committed metrics)")
    return [line[3:] for line in done.stdout.splitlines()]


def run_experiment(root: Path, name: str) -> str:
    """Rerun every stage as experiment ``name`` (output goes to the terminal); returns ``name``."""
    changed = uncommitted_changes(root)
    if changed:
        log.warning("uncommitted changes are part of the rerun: %s", ", ".join(changed[:5]))
    log.info("rerunning the whole pipeline as experiment '%s' (dvc exp run --temp --force)", name)
    done = subprocess.run(_dvc("exp", "run", "--temp", "--force", "-n", name), cwd=root,
                          env=_env())  # fmt: skip
    if done.returncode != 0:
        raise UserError(
            f"dvc exp run failed (exit {done.returncode}); its output above says which stage"
        )
    return name


def metrics_diff(root: Path, baseline: str, target: str | None) -> dict[str, Any]:
    """``dvc metrics diff BASELINE [TARGET] --json --all``; no target = the workspace."""
    revs = [baseline] if target is None else [baseline, target]
    done = subprocess.run(_dvc("metrics", "diff", *revs, "--json", "--all"), cwd=root,
                          env=_env(), capture_output=True, text=True)  # fmt: skip
    last = (done.stderr.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        raise UserError(f"dvc metrics diff {' '.join(revs)} failed: {last}")
    try:
        diff = json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        raise UserError(f"dvc metrics diff {' '.join(revs)}: unreadable output: {last}") from None
    if not diff:
        raise UserError(f"dvc metrics diff {' '.join(revs)} found no metrics; is dvc.yaml here?")
    return diff
