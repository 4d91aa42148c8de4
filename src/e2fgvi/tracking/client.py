"""The MLflow client, made with HTTP limits that keep a dead server from stalling a stage.

mlflow is imported when the first client is made, not when ``e2fgvi.tracking`` is imported
(importing it takes seconds, and most importers only need the URI rules).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from e2fgvi.tracking.names import NOTE_TAG
from e2fgvi.tracking.note import experiment_note
from e2fgvi.tracking.uri import is_remote, store_dir

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# MLflow's own HTTP retry loop backs off for minutes; we retry ourselves, off the hot path.
# MLflow reads these variables at request time and has no per-client switch for them, so they
# are set (unless the user set them) when a client is made, never at import.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

# Held while mlflow is imported: the sender thread's first client and the main thread's system
# metrics import it at once, and two threads in mlflow's circular imports can leave one of them
# an ImportError ("partially initialized module"), which ended a training start.
MLFLOW_IMPORT = threading.Lock()

# A team server's refusals of this user, by MLflow error code, in words a user can act on.
_REFUSED = {
    "UNAUTHENTICATED": "authentication failed (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
    "MLFLOW_TRACKING_PASSWORD in the environment",
    "PERMISSION_DENIED": "denied this user access (HTTP 403): ask its admin for EDIT permission",
}


def refusal(exc: BaseException) -> str | None:
    """The server's refusal of this user (HTTP 401/403) in words; None for any other failure."""
    return _REFUSED.get(getattr(exc, "error_code", ""))


def client(uri: str) -> MlflowClient:
    """A client for ``uri`` whose requests fail within seconds when the server is away."""
    with MLFLOW_IMPORT:
        from mlflow.tracking import MlflowClient

    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(mlflow: MlflowClient, name: str, artifact_root: Path | None, uri: str) -> str:
    """The id of experiment ``name``, created when missing; it gets a description if it has none."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        if NOTE_TAG not in experiment.tags:
            note = experiment_note(experiment.experiment_id)
            mlflow.set_experiment_tag(experiment.experiment_id, NOTE_TAG, note)
        return experiment.experiment_id
    # A local artifact folder only makes sense beside a local store; a tracking server keeps
    # (or proxies) the artifacts of the experiments it creates.
    local = not is_remote(uri) and artifact_root is not None
    location = (store_dir(artifact_root) / name).as_uri() if local else None
    created = mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment_tag(created, NOTE_TAG, experiment_note(created))
    return created
