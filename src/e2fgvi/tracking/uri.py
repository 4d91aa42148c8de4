"""Which tracking store a stage logs to, and the train stage's reference to its run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from e2fgvi.errors import UserError

log = logging.getLogger(__name__)


def store_dir(folder: str | Path) -> Path:
    """The local MLflow store folder, absolute; a relative one is the DVC project's.

    A queued or ``--temp`` DVC experiment runs in a copy under ``.dvc/tmp/exps``; DVC then
    points ``DVC_ROOT`` at the project itself, so every experiment's run lands in one store
    (the one ``make ui`` shows) instead of a copy that is deleted afterwards.
    """
    folder = Path(folder)
    root = os.environ.get("DVC_ROOT", "").strip()
    if root and not folder.is_absolute():
        folder = Path(root) / folder
    return folder.resolve()


def tracking_uri(folder: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else SQLite at ``<folder>/mlflow.db`` (see ``store_dir``)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    store = store_dir(folder)
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def read_run_reference(path: Path) -> tuple[str | None, str | None, Path | None]:
    """(run id, recorded URI, spool file) from the train stage's ``mlflow_run.json``.

    The run id is None when the server was away for the whole train stage: the run's spool
    then holds its records and names the run once a later stage has sent them. A missing or
    broken file is one line naming it: later stages check it before their work.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the train stage first (dvc repro train)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); rerun the train stage") from None
    if not isinstance(raw, dict) or not (raw.get("run_id") or raw.get("spool")):
        raise UserError(f"{path}: no 'run_id' and no 'spool'; rerun the train stage")
    spool = Path(raw["spool"]) if raw.get("spool") else None
    if not raw.get("run_id") and not spool.exists():
        raise UserError(
            f"{path}: the MLflow server was away during training and the run's spool {spool} "
            "is gone, so the run cannot be found; rerun the train stage (dvc repro -f train)"
        )
    return (str(raw["run_id"]) if raw.get("run_id") else None), raw.get("uri"), spool


def stage_uri(store_dir: str | Path, recorded: str | None) -> str:
    """The URI a later stage logs to: this environment's, warning when train used another."""
    uri = tracking_uri(store_dir)
    if recorded and recorded != uri:
        log.warning("the train stage logged to %s; this stage logs to %s", recorded, uri)
    return uri


def is_remote(uri: str) -> bool:
    """True for a tracking server (which keeps or proxies its experiments' artifacts)."""
    return uri.startswith(("http://", "https://", "databricks"))
