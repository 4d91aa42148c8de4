"""MLflow tracking: the only code that imports mlflow.

One MLflow run per experiment: the train stage creates it, evaluate and cost attach to it by id.
Every write goes through a buffer, so a tracking server that is down at start or goes away
mid-run never stops training and never loses a record: failed writes are kept in order and
retried; on close, whatever is still pending is spooled to a JSON-lines file that a later stage
(or ``replay_spool``) sends once the server is back.

Modules: ``uri`` (which store a stage logs to, the train stage's run reference), ``client``
(the MLflow client and its HTTP limits), ``send`` (one record to one MLflow call), ``spool``
(the spool file format), ``logger`` (the buffered ``RunLogger``, replay, attach), ``queries``
(reading runs back), ``source`` (run names and source tags from git and DVC), ``system``
(MLflow's system metrics through the logger), ``names`` (the metric, param and run names the
UI shows: the one table from cost record fields to MLflow keys), ``note`` (the run's
description, and the registered versions it describes) and ``models`` (the generator as a registered
pyfunc model; imported only when a model record is sent, as it imports mlflow at once).
"""

from e2fgvi.tracking import names
from e2fgvi.tracking.client import refusal
from e2fgvi.tracking.logger import RunLogger, attach, replay_spool
from e2fgvi.tracking.note import (
    cost_sentence,
    forecast_sentence,
    profile_sentence,
    ran_sentence,
    scored_sentence,
)
from e2fgvi.tracking.queries import (
    PAGE_SIZE,
    RunRecord,
    artifact_text,
    experiment_id,
    list_artifacts,
    metric_history,
    search_runs,
)
from e2fgvi.tracking.source import run_name, source_tags
from e2fgvi.tracking.system import SystemMetrics
from e2fgvi.tracking.uri import read_run_reference, stage_uri, store_dir, tracking_uri

__all__ = [
    "PAGE_SIZE",
    "RunLogger",
    "RunRecord",
    "SystemMetrics",
    "artifact_text",
    "attach",
    "cost_sentence",
    "experiment_id",
    "forecast_sentence",
    "list_artifacts",
    "metric_history",
    "names",
    "profile_sentence",
    "ran_sentence",
    "read_run_reference",
    "refusal",
    "replay_spool",
    "run_name",
    "scored_sentence",
    "search_runs",
    "source_tags",
    "stage_uri",
    "store_dir",
    "tracking_uri",
]
