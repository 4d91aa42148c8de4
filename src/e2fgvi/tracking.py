"""MLflow tracking: the only module that imports mlflow.

One MLflow run per experiment: the train stage creates it, evaluate and cost attach to it by id.
Every write goes through a buffer, so a tracking server that is down at start or goes away
mid-run never stops training and never loses a record: failed writes are kept in order and
retried; on close, whatever is still pending is spooled to a JSON-lines file that a later stage
(or ``replay_spool``) sends once the server is back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2fgvi.atomic import write_text
from e2fgvi.errors import UserError

log = logging.getLogger(__name__)

# MLflow's own HTTP retry loop backs off for minutes; we retry ourselves, off the hot path.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

_MAX_PARAM_LEN = 6000
_REJECTED = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"}
_REFUSED = {
    "UNAUTHENTICATED": "authentication failed (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
    "MLFLOW_TRACKING_PASSWORD in the environment",
    "PERMISSION_DENIED": "denied this user access (HTTP 403): ask its admin for EDIT permission",
}


def refusal(exc: BaseException) -> str | None:
    """The server's refusal of this user (HTTP 401/403) in words; None for any other failure."""
    return _REFUSED.get(getattr(exc, "error_code", ""))


def tracking_uri(store_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else SQLite at ``<store_dir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    store = Path(store_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def read_run_reference(path: Path) -> tuple[str, str | None, Path | None]:
    """(run id, recorded URI, spool file) from the train stage's ``mlflow_run.json``.

    A missing or broken file is one line naming it: later stages check it before their work.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the train stage first (dvc repro train)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); rerun the train stage") from None
    if not isinstance(raw, dict) or not raw.get("run_id"):
        raise UserError(f"{path}: no 'run_id'; rerun the train stage")
    spool = raw.get("spool")
    return str(raw["run_id"]), raw.get("uri"), Path(spool) if spool else None


def stage_uri(store_dir: str | Path, recorded: str | None) -> str:
    """The URI a later stage logs to: this environment's, warning when train used another."""
    uri = tracking_uri(store_dir)
    if recorded and recorded != uri:
        log.warning("the train stage logged to %s; this stage logs to %s", recorded, uri)
    return uri


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str, artifact_root: Path | None, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A local artifact folder only makes sense beside a local store; a tracking server keeps
    # (or proxies) the artifacts of the experiments it creates.
    remote = uri.startswith(("http://", "https://", "databricks"))
    location = (
        None if remote or artifact_root is None else (artifact_root.resolve() / name).as_uri()
    )
    return client.create_experiment(name, artifact_location=location)


@dataclass
class RunLogger:
    """Buffered writer for one MLflow run (created lazily, or attached by ``run_id``).

    Args:
        uri: tracking URI (see ``tracking_uri``).
        experiment: experiment name, used only when the run must be created.
        run_id: attach to this existing run instead of creating one.
        artifact_root: local folder for a new experiment's artifacts (SQLite/file stores).
        spool: file that receives records still unsent at ``close``.
    """

    uri: str
    experiment: str = "e2fgvi"
    run_id: str | None = None
    run_name: str = ""
    artifact_root: Path | None = None
    spool: Path | None = None
    retry_interval_s: float = 30.0
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _last_failure: float = -1e18
    _refused: str | None = None
    _warned: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stash: Path | None = None

    # -- public API: every call only queues a record, then tries to send the queue ------------

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._queue({"op": "tags", "values": {k: str(v) for k, v in tags.items()}})

    def log_params(self, params: dict[str, Any]) -> None:
        values = {k: str(v)[:_MAX_PARAM_LEN] for k, v in params.items()}
        self._queue({"op": "params", "values": values})

    def log_metrics(self, metrics: dict[str, float | None], step: int = 0) -> None:
        """Log finite numbers at an explicit step; ``None`` values (unmeasured) are skipped."""
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        now = int(time.time() * 1000)
        self._queue({"op": "metrics", "values": values, "step": int(step), "ts": now})

    def log_artifact(
        self, path: str | Path, artifact_path: str | None = None, name: str | None = None
    ) -> None:
        """Log a file or folder (optionally under another file ``name``).

        A snapshot is taken now (hard link, else copy), so the file may change or vanish later.
        """
        kept = self._keep(Path(path), name)
        self._queue({"op": "artifact", "path": str(kept), "dir": artifact_path, "stashed": True})

    def log_text(self, text: str, artifact_file: str) -> None:
        stash = Path(tempfile.mkdtemp(dir=self._stash_dir())) / Path(artifact_file).name
        write_text(stash, text)
        parent = str(Path(artifact_file).parent)
        self._queue(
            {
                "op": "artifact",
                "path": str(stash),
                "dir": None if parent == "." else parent,
                "stashed": True,
            }
        )

    def end(self, status: str = "FINISHED") -> None:
        self._queue({"op": "end", "status": status})

    def flush(self, force: bool = True) -> bool:
        """Send what is queued; True when nothing is left pending."""
        with self._lock:
            if not self._pending:
                return True
            if not force and time.monotonic() - self._last_failure < self.retry_interval_s:
                return False
            sent = 0
            try:
                client = _client(self.uri)
                for record in self._pending:
                    self._send_or_drop(client, record)
                    sent += 1
            except Exception as exc:  # any tracking failure must not stop training
                del self._pending[:sent]
                self._last_failure = time.monotonic()
                self._refused = refusal(exc)
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "MLflow tracking at %s %s; buffering %d record(s), retrying every %.0f s",
                        self.uri,
                        self._refused or f"unreachable ({type(exc).__name__})",
                        len(self._pending),
                        self.retry_interval_s,
                    )
                return False
            if self._warned:
                log.info("MLflow tracking reachable again; sent %d buffered record(s)", sent)
                self._warned = False
            self._pending.clear()
            return True

    @property
    def stash_dir(self) -> Path | None:
        """The folder holding snapshots of artifacts not yet sent (None when there are none)."""
        return self._stash

    def close(self) -> bool:
        """Final flush; spool what could not be sent. True when everything reached MLflow."""
        if self.flush(force=True):
            if self._stash is not None:
                shutil.rmtree(self._stash, ignore_errors=True)
                self._stash = None
            return True
        if self.spool is None:
            reason = self._refused or "unreachable"
            log.error("MLflow %s: %d record(s) could not be sent", reason, len(self._pending))
            return False
        with self._lock:
            # Appending keeps what an earlier stage spooled for the same run, in order.
            lines = [json.dumps(r) for r in self._pending]
            if not self.spool.exists():
                header = {"op": "run", "run_id": self.run_id, "experiment": self.experiment,
                          "run_name": self.run_name}  # fmt: skip
                lines.insert(0, json.dumps(header))
            previous = self.spool.read_text() if self.spool.exists() else ""
            write_text(self.spool, previous + "\n".join(lines) + "\n")
        log.warning(
            "MLflow %s: %d record(s) spooled to %s; they are sent by the next stage "
            "that reaches the server",
            self._refused or "unreachable",
            len(self._pending),
            self.spool,
        )
        return False

    # -- internals ------------------------------------------------------------------------

    def _queue(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append(record)
        self.flush(force=False)

    def _stash_dir(self) -> Path:
        if self._stash is None:
            base = self.spool.parent if self.spool else None
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            self._stash = Path(tempfile.mkdtemp(prefix="mlflow-stash-", dir=base)).resolve()
        return self._stash

    def _keep(self, path: Path, name: str | None = None) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self._stash_dir()))
        target = folder / (name or path.name)
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
        return target

    def _ensure_run(self, client) -> str:
        if self.run_id is None:
            exp_id = _experiment_id(client, self.experiment, self.artifact_root, self.uri)
            run = client.create_run(exp_id, run_name=self.run_name or None)
            self.run_id = run.info.run_id
            log.info(
                "MLflow run %s in experiment '%s' (%s)", self.run_id, self.experiment, self.uri
            )
        return self.run_id

    def _send_or_drop(self, client, record: dict[str, Any]) -> None:
        """Send one record; a record the server rejects as invalid is dropped, not retried."""
        from mlflow.exceptions import MlflowException

        try:
            self._send(client, record)
        except MlflowException as exc:
            if exc.error_code not in _REJECTED:
                raise
            log.error("MLflow rejected a %s record: %s", record["op"], exc.message.splitlines()[0])

    def _send(self, client, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._ensure_run(client)
        op = record["op"]
        if op == "metrics":
            metrics = [
                Metric(k, v, record["ts"], record["step"]) for k, v in record["values"].items()
            ]
            client.log_batch(run_id, metrics=metrics)
        elif op == "params":
            existing = client.get_run(run_id).data.params
            params = [Param(k, v) for k, v in record["values"].items() if k not in existing]
            client.log_batch(run_id, params=params)
        elif op == "tags":
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["values"].items()])
        elif op == "artifact":
            path = Path(record["path"])
            if not path.exists():
                log.warning("artifact %s vanished before it could be logged; skipped", path)
            elif path.is_dir():
                client.log_artifacts(run_id, str(path), record["dir"])
            else:
                client.log_artifact(run_id, str(path), record["dir"])
            if record.get("stashed"):
                shutil.rmtree(path.parent, ignore_errors=True)
        elif op == "end":
            client.set_terminated(run_id, record["status"])


def replay_spool(spool: Path, uri: str) -> str | None:
    """Send a spooled run's records; returns the run id (None if still unreachable).

    The resolved id is kept in ``<spool>.run_id`` so later stages find the run after the spool
    itself is gone.
    """
    lines = [json.loads(line) for line in spool.read_text().splitlines() if line.strip()]
    header, records = lines[0], lines[1:]
    logger = RunLogger(
        uri=uri,
        experiment=header["experiment"],
        run_id=header["run_id"],
        run_name=header["run_name"],
    )
    logger._pending = records
    if not logger.flush(force=True):
        return None
    write_text(_marker(spool), f"{logger.run_id}\n")
    spool.unlink()
    return logger.run_id


def _marker(spool: Path) -> Path:
    return spool.with_name(spool.name + ".run_id")


def attach(uri: str, run_id: str | None, spool: Path | None = None, **kwargs: Any) -> RunLogger:
    """A logger for an existing run; first replays a spool left by an earlier stage.

    If the server is still unreachable, this logger's own records join the same spool.
    """
    if spool is not None:
        if spool.exists():
            run_id = replay_spool(spool, uri) or run_id
        elif run_id is None and _marker(spool).exists():
            run_id = _marker(spool).read_text().strip()
    return RunLogger(uri=uri, run_id=run_id, spool=spool, **kwargs)


@dataclass(frozen=True)
class RunRecord:
    """A run as read back for comparison tables."""

    run_id: str
    experiment: str
    run_name: str
    status: str
    start_time_ms: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


def search_runs(uri: str, experiments: list[str] | None = None) -> list[RunRecord]:
    """Every run of the named experiments (all experiments when None), newest first."""
    client = _client(uri)
    found = client.search_experiments()
    wanted = [e for e in found if experiments is None or e.name in experiments]
    if not wanted:
        return []
    names = {e.experiment_id: e.name for e in wanted}
    runs = client.search_runs(list(names), order_by=["attributes.start_time DESC"])
    return [
        RunRecord(
            run_id=r.info.run_id,
            experiment=names[r.info.experiment_id],
            run_name=r.info.run_name or "",
            status=r.info.status,
            start_time_ms=r.info.start_time or 0,
            params=dict(r.data.params),
            metrics=dict(r.data.metrics),
            tags={k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
        )
        for r in runs
    ]


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, in step order."""
    history = _client(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def list_artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in _client(uri).list_artifacts(run_id, path)]


def experiment_id(uri: str, name: str) -> str | None:
    """The id of the named experiment (for UI links such as ``#/experiments/<id>/runs/<run>``)."""
    experiment = _client(uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment else None
