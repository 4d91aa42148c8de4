"""The buffered run logger: every call queues a record; a background thread sends the queue.

No caller ever waits for the tracking server, which may be down or accept connections and never
answer. A sender thread drains the queue in order (``flush``); a failed send keeps the records
and retries every ``retry_interval_s`` (at least every second). ``close`` waits while the server
answers and spools whatever is still unsent once it does not. Memory and disk are bounded: at
most ``MAX_PENDING`` records wait (beyond that every other waiting metrics record is dropped and
counted in the run's tag ``tracking.dropped_metric_records``), and an artifact waiting under the
same name as a newer one (``checkpoints/latest.pth``) gives way to it, so an outage keeps one
checkpoint snapshot, not one per checkpoint.

Each run has a client-side key (tag ``e2fgvi.run_key``, and the name of its spool), so records
written before MLflow assigned the run id always find their run, and never another one.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2fgvi.atomic import write_text
from e2fgvi.tracking.client import client, ensure_experiment, refusal
from e2fgvi.tracking.send import batch, rejected_dropped, send
from e2fgvi.tracking.spool import DROPPED, append_records, read_records, write_records

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000
MAX_PENDING = 10_000  # records waiting in memory, and in one spool file
RETRY_FLOOR_S = 1.0  # never retry a failed send more often than this
RUN_KEY_TAG = "e2fgvi.run_key"
DROPPED_TAG = "tracking.dropped_metric_records"
_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class _Sender:
    """The sender thread's shared state (guarded by the logger's lock)."""

    wake: threading.Condition
    sending: threading.Lock = field(default_factory=threading.Lock)  # one drain at a time
    thread: threading.Thread | None = None
    client: Any = None
    inflight: list[dict[str, Any]] = field(default_factory=list)  # the head being sent
    failing: bool = False  # the last send failed
    closed: bool = False
    sent: int = 0
    dropped: int = 0  # metrics records this logger thinned away
    metrics_seen: int = 0  # numbers the metrics records, for even thinning
    stride: int = 1  # every stride-th metrics record is kept once the backlog was full
    adopted: int = 0  # records taken over from the spool and not yet sent
    owns_spool: bool = False  # the spool's records are in this logger's queue
    dropped_tag: dict[str, Any] | None = None  # the record reporting a spool's dropped count


@dataclass
class RunLogger:
    """Buffered writer for one MLflow run (created lazily, or attached by ``run_id``).

    Args:
        uri: tracking URI (see ``tracking_uri``).
        experiment: experiment name, used only when the run must be created.
        run_id: attach to this existing run instead of creating one.
        artifact_root: local folder for a new experiment's artifacts (SQLite/file stores).
        spool: file that receives records still unsent at ``close``.
        run_key: the run's client-side key; default the spool's name, else a new one.
        start_time_ms: when a new run started (default: when it is created), e.g. a profile's
            start, so the UI's duration covers the work and not only its logging.
    """

    uri: str
    experiment: str = "e2fgvi"
    run_id: str | None = None
    run_name: str = ""
    artifact_root: Path | None = None
    spool: Path | None = None
    retry_interval_s: float = 30.0
    run_key: str | None = None
    start_time_ms: int | None = None
    _pending: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _last_failure: float = field(default=-1e18, init=False, repr=False)
    _warned: bool = field(default=False, init=False, repr=False)
    _refused: str | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stash: Path | None = field(default=None, init=False, repr=False)
    _sender: _Sender | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.run_key is None:
            self.run_key = self.spool.stem if self.spool else uuid.uuid4().hex
        self._sender = _Sender(threading.Condition(self._lock))

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
            run_key=header.get("run_key") or spool.stem,
        )
        logger._take(header, records)
        return logger

    # -- public API: every call only queues a record for the sender thread ----------------

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

        A snapshot is taken now (hard link, else copy), so the file may change or vanish later;
        a snapshot still waiting under the same target name gives way to this one.
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

    def set_note(self, part: str, text: str) -> None:
        """One sentence (``ran``, ``scored``, ``cost``) of the run's description in the UI."""
        self._queue({"op": "note", "part": part, "text": text})

    def share_cost_view(self, currency: str) -> None:
        """The run's experiment gets a shared runs-table view with the cost columns."""
        self._queue({"op": "view", "currency": currency})

    def set_running(self) -> None:
        """Mark the run running again (a new session of a run that had ended)."""
        self._queue({"op": "running"})

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
        """Send what is queued, on this thread; True when nothing is left pending.

        Without ``force`` nothing is tried within ``retry_interval_s`` of a failed send.
        """
        with self._sender.sending:
            if not force and time.monotonic() - self._last_failure < self._retry_s():
                return False
            return self._drain()

    @property
    def stash_dir(self) -> Path | None:
        """The folder holding snapshots of artifacts not yet sent (None when there are none)."""
        return self._stash

    def close(self) -> bool:
        """Wait while the server answers; spool what is unsent. True when all reached MLflow."""
        sender = self._sender
        with self._lock:
            if sender.closed:
                return not self._pending
            if sender.dropped and self.spool is None:
                self._admit({"op": "tags", "values": {DROPPED_TAG: str(sender.dropped)}})
        self._wait_while_sending()
        with self._lock:
            sender.closed = True
            sender.wake.notify_all()
            left = [r for r in self._pending if r is not sender.dropped_tag]
        atexit.unregister(self.close)
        if not left:
            if sender.owns_spool:
                self._resolve_spool()
            if self._stash is not None:
                shutil.rmtree(self._stash, ignore_errors=True)
                self._stash = None
            return True
        if self.spool is None:
            reason = self._refused or "unreachable"
            log.error("MLflow %s: %d record(s) could not be sent", reason, len(left))
            return False
        if sender.owns_spool:  # its records are in ``left``: write them back, not twice
            header, _ = read_records(self.spool)
            write_records(self.spool, {**header, "run_id": self.run_id}, [])
        append_records(self.spool, self._header(), left, MAX_PENDING, sender.dropped)
        log.warning(
            "MLflow %s: %d record(s) spooled to %s; they are sent by the next stage "
            "that reaches the server",
            self._refused or "unreachable",
            len(left),
            self.spool,
        )
        return False

    # -- internals ------------------------------------------------------------------------

    def _retry_s(self) -> float:
        return max(self.retry_interval_s, RETRY_FLOOR_S)

    def _header(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_key": self.run_key, "experiment": self.experiment,
                "run_name": self.run_name, "uri": self.uri}  # fmt: skip

    def _take(self, header: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """Put a spool's records at the head of the queue (plus its dropped count as a tag)."""
        if records and header.get(DROPPED):
            tag = {"op": "tags", "values": {DROPPED_TAG: str(header[DROPPED])}}
            records = [*records, tag]
            self._sender.dropped_tag = tag
        with self._lock:
            self._pending[:0] = records

    def _adopt(self, spool: Path) -> None:
        """Take over the unsent records of this run's spool; they are sent first, in order."""
        header, records = read_records(spool)
        self.run_id = self.run_id or header.get("run_id")
        if not records:
            return
        self._take(header, records)
        self._sender.adopted = len(self._pending)
        self._sender.owns_spool = True
        self._start_sender()

    def _queue(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._sender.closed:
                log.warning("MLflow logger already closed: a %s record is dropped", record["op"])
                return
            self._admit(record)
            self._sender.wake.notify_all()
        self._start_sender()

    def _start_sender(self) -> None:
        with self._lock:
            if self._sender.thread is not None:
                return
            self._sender.thread = threading.Thread(
                target=self._send_in_background, name="mlflow-sender", daemon=True
            )
            self._sender.thread.start()
        atexit.register(self.close)  # a stage that forgets close still sends or spools

    def _admit(self, record: dict[str, Any]) -> None:
        """Append ``record`` (lock held), keeping the queue within its bounds."""
        sender = self._sender
        if record["op"] == "metrics":
            record["n"] = sender.metrics_seen
            sender.metrics_seen += 1
            last = self._pending[-1] if len(self._pending) > len(sender.inflight) else None
            if last is not None and last["op"] == "metrics" and last["n"] % sender.stride:
                self._pending.pop()  # off the thinned grid: it only stood for the newest values
                sender.dropped += 1
        self._pending.append(record)
        if record["op"] == "artifact":
            self._supersede(len(sender.inflight))
        if len(self._pending) > MAX_PENDING:
            self._thin()

    def _thin(self) -> None:
        """Keep every ``stride``-th metrics record (and the newest); the stride doubles.

        From then on only every ``stride``-th new metrics record stays (and the newest one), so
        the whole backlog keeps an even, coarser grid of steps.
        """
        sender = self._sender
        protect = max(len(sender.inflight), sender.adopted)
        before = len(self._pending)
        while len(self._pending) > MAX_PENDING and sender.stride < 2**40:
            sender.stride *= 2
            metrics = [i for i, r in enumerate(self._pending) if r["op"] == "metrics"]
            newest = metrics[-1] if metrics else -1
            self._pending[:] = [
                r
                for i, r in enumerate(self._pending)
                if i < protect or i == newest or r["op"] != "metrics" or r["n"] % sender.stride == 0
            ]
        if not sender.dropped and len(self._pending) < before:
            log.warning(
                "MLflow backlog full (%d records): waiting metrics records are thinned out "
                "evenly; the dropped ones are counted in the run's tag %s",
                MAX_PENDING,
                DROPPED_TAG,
            )
        sender.dropped += before - len(self._pending)

    def _supersede(self, start: int) -> None:
        """Drop waiting artifacts that a newer one of the same target replaces (lock held).

        Only from index ``start`` on (before it: the records being sent); snapshots go too.
        """
        sender, seen = self._sender, set()
        for index in range(len(self._pending) - 1, start - 1, -1):
            record = self._pending[index]
            if record["op"] != "artifact":
                continue
            target = (record["dir"], Path(record["path"]).name)
            if target in seen:
                del self._pending[index]
                if index < sender.adopted:
                    sender.adopted -= 1
                _drop_snapshot(record)
            seen.add(target)

    def _send_in_background(self) -> None:
        sender = self._sender
        while True:
            with self._lock:
                while not sender.closed:
                    if self._pending:
                        wait = self._last_failure + self._retry_s() - time.monotonic()
                        if not sender.failing or wait <= 0:
                            break
                        sender.wake.wait(wait)
                    else:
                        sender.wake.wait()
                if sender.closed:
                    return
            with sender.sending:
                first = not sender.sent
                self._drain()
                if first and sender.sent and self.spool is not None:
                    self._replay_other_spools()
            with self._lock:
                sender.wake.notify_all()

    def _drain(self) -> bool:
        """Send the queue in order (``sending`` held); False at the first failure."""
        sender = self._sender
        while True:
            with self._lock:
                if sender.closed:
                    return False  # close has spooled what is left
                sender.inflight = batch(self._pending)
                records = sender.inflight
            if not records:
                return True
            try:
                sender.client = sender.client or client(self.uri)
                run_id = self._ensure_run(sender.client)
                with rejected_dropped(records[0]):
                    send(sender.client, run_id, records)
            except Exception as exc:  # any tracking failure must not stop training
                with self._lock:
                    sender.inflight = []
                    self._supersede(0)  # a newer snapshot may have come while this one was sent
                    sender.failing = True
                    self._last_failure = time.monotonic()
                    self._refused = refusal(exc)
                    sender.wake.notify_all()
                self._warn_unreachable(exc)
                return False
            self._sent(records)

    def _sent(self, records: list[dict[str, Any]]) -> None:
        sender = self._sender
        with self._lock:
            del self._pending[: len(records)]  # the head: nothing else removes in-flight records
            sender.inflight = []
            sender.failing = False
            sender.sent += len(records)
            # The adopted records are the head of the queue: once sent, the spool is resolved.
            sender.adopted = max(sender.adopted - len(records), 0)
            resolved = sender.owns_spool and not sender.adopted
            sender.wake.notify_all()
        if resolved:
            self._resolve_spool()
        if self._warned:
            log.info("MLflow tracking reachable again; sending the buffered records")
            self._warned = False

    def _resolve_spool(self) -> None:
        """Once its records are sent, the spool keeps only its header, naming the run."""
        with self._lock:
            if not self._sender.owns_spool or self.run_id is None or not self.spool.exists():
                return
            self._sender.owns_spool = False
            header, _ = read_records(self.spool)
            write_records(self.spool, {**header, "run_id": self.run_id}, [])

    def _wait_while_sending(self) -> None:
        """Until the queue is sent (and the sender idle), or the server stopped answering."""
        sender = self._sender
        while True:
            with self._lock:
                if sender.failing or sender.thread is None or not sender.thread.is_alive():
                    return
                if not self._pending and sender.sending.acquire(blocking=False):
                    sender.sending.release()  # nothing queued, nothing being sent
                    return
                sender.wake.wait(0.5)

    def _warn_unreachable(self, exc: Exception) -> None:
        if self._warned:
            return
        self._warned = True
        log.warning(
            "MLflow tracking at %s %s; buffering %d record(s), retrying every %.0f s",
            self.uri,
            self._refused or f"unreachable ({type(exc).__name__})",
            len(self._pending),
            self._retry_s(),
        )

    def _replay_other_spools(self) -> None:
        """Once the server answers, send the other runs' spools kept for the same store."""
        for other in sorted(self.spool.parent.glob("*.jsonl")):
            if other == self.spool:
                continue
            try:
                header, records = read_records(other)
                if records and header.get("uri") == self.uri:
                    log.info("sending the records spooled in %s", other)
                    replay_spool(other, self.uri)
            except Exception as exc:  # another run's spool must not stop this one
                log.warning("%s: not replayed (%s: %s)", other, type(exc).__name__, exc)

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
            self.run_id = _find_run(mlflow, exp_id, self.run_key)
            if self.run_id is None:
                tags = {RUN_KEY_TAG: self.run_key}
                run = mlflow.create_run(
                    exp_id, self.start_time_ms, tags=tags, run_name=self.run_name or None
                )
                self.run_id = run.info.run_id
            log.info(
                "MLflow run %s in experiment '%s' (%s)", self.run_id, self.experiment, self.uri
            )
        return self.run_id


def _find_run(mlflow, experiment_id: str, run_key: str | None) -> str | None:
    """The run already created for ``run_key`` (by an earlier session or stage), if any."""
    if not run_key or not _KEY.match(run_key):
        return None
    query = f"tags.`{RUN_KEY_TAG}` = '{run_key}'"
    runs = mlflow.search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


def _drop_snapshot(record: dict[str, Any]) -> None:
    """Delete the snapshot of an artifact record that will not be sent."""
    if record.get("stashed"):
        shutil.rmtree(Path(record["path"]).parent, ignore_errors=True)


def replay_spool(spool: Path, uri: str) -> str | None:
    """Send a spooled run's records now, on this thread; the run id (None if unreachable).

    What was sent leaves the file; once everything is sent the spool keeps only its header,
    which now names the run, so later stages find it (and a second replay sends nothing).
    """
    header, _ = read_records(spool)
    logger = RunLogger.from_spool(spool, uri)
    done = logger.flush(force=True)
    left = [r for r in logger._pending if r is not logger._sender.dropped_tag]
    write_records(spool, {**header, "run_id": logger.run_id}, left)
    return logger.run_id if done else None


def attach(uri: str, run_id: str | None, spool: Path | None = None, **kwargs: Any) -> RunLogger:
    """A logger for an existing run; an earlier stage's spool of it is sent first.

    The run is ``run_id``, else the one the spool names (its header, or its key: the spool's
    name). If the server is still unreachable, this logger's own records join the same spool.
    """
    if spool is not None and spool.exists():
        header, _ = read_records(spool)
        for name in ("experiment", "run_name"):
            kwargs.setdefault(name, header[name])
        kwargs.setdefault("run_key", header.get("run_key"))
    logger = RunLogger(uri=uri, run_id=run_id, spool=spool, **kwargs)
    if spool is not None and spool.exists():
        logger._adopt(spool)
    return logger
