"""Buffered records to MLflow: every tag, param, metric, artifact and run status goes through here.

A record is a JSON-able dict with an ``op``: ``tags``, ``params``, ``metrics`` (with ``step``
and ``ts``), ``artifact`` (a snapshot ``path`` and target ``dir``), ``end`` (``status``),
``running`` (a resumed run is running again), ``image`` (a snapshot PNG ``path``, ``key``,
``step``, ``ts``), ``dataset`` (a run input: ``dataset`` fields and ``context``), ``note`` (one
sentence ``part`` of the run's description: ``text``), ``view`` (the experiment's runs table
with the cost columns in ``currency``) or ``model`` (see
``e2fgvi.tracking.models``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2fgvi.tracking.note import describe_versions, send_note, send_view

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# Error codes of a server that refuses a record for what it is; resending it cannot help.
_REJECTED = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"}

# MLflow's limit on the metrics of one log_batch request.
BATCH_METRICS = 1000


def batch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records at the head of ``records`` that go in one request (consecutive metrics)."""
    if not records or records[0]["op"] != "metrics":
        return records[:1]
    count = 0
    for end, record in enumerate(records):
        if record["op"] != "metrics":
            return records[:end]
        count += len(record["values"])
        if end and count > BATCH_METRICS:
            return records[:end]
    return list(records)


@contextmanager
def rejected_dropped(record: dict[str, Any]) -> Iterator[None]:
    """Around sending ``record``: a record the server rejects as invalid is dropped, not retried.

    Any other failure (server away, timeout) propagates, and the caller keeps the record.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code not in _REJECTED:
            raise
        log.error("MLflow rejected a %s record: %s", record["op"], exc.message.splitlines()[0])


def send(mlflow: MlflowClient, run_id: str, records: list[dict[str, Any]]) -> None:
    """Write one record, or one ``batch`` of metrics records, to run ``run_id``."""
    from mlflow.entities import Metric, Param, RunTag

    record = records[0]
    op = record["op"]
    if op == "metrics":
        metrics = [
            Metric(k, v, r["ts"], r["step"]) for r in records for k, v in r["values"].items()
        ]
        mlflow.log_batch(run_id, metrics=metrics)
    elif op == "params":
        existing = mlflow.get_run(run_id).data.params
        params = [Param(k, v) for k, v in record["values"].items() if k not in existing]
        mlflow.log_batch(run_id, params=params)
    elif op == "tags":
        mlflow.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["values"].items()])
    elif op == "artifact":
        _send_artifact(mlflow, run_id, record)
    elif op == "end":
        mlflow.set_terminated(run_id, record["status"])
    elif op == "running":
        mlflow.update_run(run_id, status="RUNNING")
    elif op == "image":
        _send_image(mlflow, run_id, record)
    elif op == "dataset":
        _send_dataset(mlflow, run_id, record)
    elif op == "view":
        send_view(mlflow, run_id, record["currency"])
    elif op == "note":
        send_note(mlflow, run_id, record["part"], record["text"])
    elif op == "model":
        from e2fgvi.tracking.models import log_and_register

        log_and_register(mlflow, run_id, record)
        describe_versions(mlflow, run_id)
        for kept in record["files"].values():
            shutil.rmtree(Path(kept).parent, ignore_errors=True)


def _send_image(mlflow: MlflowClient, run_id: str, record: dict[str, Any]) -> None:
    from PIL import Image

    path = Path(record["path"])
    if not path.exists():
        log.warning("image %s vanished before it could be logged; skipped", path)
        return
    with Image.open(path) as image:
        image.load()
        mlflow.log_image(run_id, image, key=record["key"], step=record["step"],
                         timestamp=record["ts"], synchronous=True)  # fmt: skip
    shutil.rmtree(path.parent, ignore_errors=True)


def _send_dataset(mlflow: MlflowClient, run_id: str, record: dict[str, Any]) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = Dataset(**record["dataset"])
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, record["context"])]
    mlflow.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])


def _send_artifact(mlflow: MlflowClient, run_id: str, record: dict[str, Any]) -> None:
    path = Path(record["path"])
    if not path.exists():
        log.warning("artifact %s vanished before it could be logged; skipped", path)
    elif path.is_dir():
        mlflow.log_artifacts(run_id, str(path), record["dir"])
    else:
        mlflow.log_artifact(run_id, str(path), record["dir"])
    if record.get("stashed"):
        shutil.rmtree(path.parent, ignore_errors=True)
