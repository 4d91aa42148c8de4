"""The buffered run logger: every call queues a record, and the queue is sent when it can be.

A failed send keeps the records in order and retries at most every ``retry_interval_s`` (or at
once on ``flush``); ``close`` spools whatever is still unsent. ``flush`` is the one place that
drains the queue, so moving the sending to another thread only has to change who calls it.
"""

from __future__ import annotations

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
from e2fgvi.tracking.client import client, ensure_experiment, refusal
from e2fgvi.tracking.send import rejected_dropped, send
from e2fgvi.tracking.spool import append_records, marker_path, read_records

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000


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
    _pending: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _last_failure: float = field(default=-1e18, init=False, repr=False)
    _warned: bool = field(default=False, init=False, repr=False)
    _refused: str | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stash: Path | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_spool(cls, spool: Path, uri: str) -> RunLogger:
        """A logger holding a spool file's records, for the run the spool names.

        The logger has no spool of its own: if its records cannot be sent, the file stays.
        """
        header, records = read_records(spool)
        logger = cls(
            uri=uri,
            experiment=header["experiment"],
            run_id=header["run_id"],
            run_name=header["run_name"],
        )
        logger._pending.extend(records)
        return logger

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

    def log_image(self, path: str | Path, key: str, step: int) -> None:
        """A PNG as a stepped image ``key`` (the UI's image grid, with a step slider).

        Snapshotted now, like ``log_artifact``.
        """
        kept = self._keep(Path(path))
        now = int(time.time() * 1000)
        self._queue({"op": "image", "path": str(kept), "key": key, "step": int(step),
                     "ts": now, "stashed": True})  # fmt: skip

    def log_dataset(self, dataset: dict[str, str], context: str) -> None:
        """A run input: ``dataset`` holds name, digest, source_type, source (and profile)."""
        self._queue({"op": "dataset", "dataset": dataset, "context": context})

    def log_model(self, model: dict[str, Any]) -> None:
        """A model to log to the run and register (see ``e2fgvi.tracking.models``).

        ``model["files"]`` (a dict of name -> path) are snapshotted now, like ``log_artifact``.
        """
        files = {name: str(self._keep(Path(path))) for name, path in model["files"].items()}
        self._queue({"op": "model", **model, "files": files, "stashed": True})

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
                mlflow = client(self.uri)
                for record in self._pending:
                    with rejected_dropped(record):
                        send(mlflow, self._ensure_run(mlflow), record)
                    sent += 1
            except Exception as exc:  # any tracking failure must not stop training
                del self._pending[:sent]
                self._last_failure = time.monotonic()
                self._refused = refusal(exc)
                self._warn_unreachable(exc)
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
            header = {"run_id": self.run_id, "experiment": self.experiment,
                      "run_name": self.run_name}  # fmt: skip
            append_records(self.spool, header, self._pending)
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

    def _warn_unreachable(self, exc: Exception) -> None:
        if self._warned:
            return
        self._warned = True
        log.warning(
            "MLflow tracking at %s %s; buffering %d record(s), retrying every %.0f s",
            self.uri,
            self._refused or f"unreachable ({type(exc).__name__})",
            len(self._pending),
            self.retry_interval_s,
        )

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

    def _ensure_run(self, mlflow) -> str:
        if self.run_id is None:
            exp_id = ensure_experiment(mlflow, self.experiment, self.artifact_root, self.uri)
            run = mlflow.create_run(exp_id, run_name=self.run_name or None)
            self.run_id = run.info.run_id
            log.info(
                "MLflow run %s in experiment '%s' (%s)", self.run_id, self.experiment, self.uri
            )
        return self.run_id


def replay_spool(spool: Path, uri: str) -> str | None:
    """Send a spooled run's records; returns the run id (None if still unreachable).

    The resolved id is kept in the spool's marker file so later stages find the run after the
    spool itself is gone.
    """
    logger = RunLogger.from_spool(spool, uri)
    if not logger.flush(force=True):
        return None
    write_text(marker_path(spool), f"{logger.run_id}\n")
    spool.unlink()
    return logger.run_id


def attach(uri: str, run_id: str | None, spool: Path | None = None, **kwargs: Any) -> RunLogger:
    """A logger for an existing run; first replays a spool left by an earlier stage.

    If the server is still unreachable, this logger's own records join the same spool.
    """
    if spool is not None:
        if spool.exists():
            run_id = replay_spool(spool, uri) or run_id
        elif run_id is None and marker_path(spool).exists():
            run_id = marker_path(spool).read_text().strip()
    return RunLogger(uri=uri, run_id=run_id, spool=spool, **kwargs)
