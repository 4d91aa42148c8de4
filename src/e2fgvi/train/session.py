"""One training session's bookkeeping: resume checks, the MLflow run, checkpoints, outputs.

A *session* is one process run of the train stage, from a fresh start or a resumed checkpoint
to the last iteration (or a kill). Rank 0 keeps the MLflow run and the loss history; at every
checkpoint every rank contributes a snapshot of its cost record, so an interrupted session's
time and energy still count when the experiment's cost is totalled.

The experiment's MLflow run is named by a key kept in the configuration's checkpoint folder
(``mlflow_run.json``, written before the first step; the folder persists across DVC runs), so
every session of one configuration, even after a crash before the first checkpoint, continues
the same run. A session ends its run FINISHED, FAILED (an exception, out of memory) or KILLED
(SIGINT, SIGTERM), with its records sent or spooled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from e2fgvi.atomic import atomic_open, write_json
from e2fgvi.config import Params, params_hash
from e2fgvi.errors import UserError, one_line
from e2fgvi.measure.meter import CostMeter
from e2fgvi.measure.record import CostRecord, read_record, write_record
from e2fgvi.tracking.spool import spool_path
from e2fgvi.train import nets as netlib
from e2fgvi.train import precision, provenance
from e2fgvi.train.distributed import World, any_rank, barrier
from e2fgvi.train.steps import Clips, StepResult, train_step
from e2fgvi.train.telemetry import History, log_checkpoint, open_run, run_record

log = logging.getLogger(__name__)

# What to do about an earlier session's cost snapshot that cannot be read.
_STALE_SNAPSHOT = (
    "delete that file (its session's time then goes uncounted) or move the checkpoint folder "
    "away to train afresh"
)


@dataclass(frozen=True)
class TrainPaths:
    """Where training reads and writes, each given by dvc.yaml through the stage's arguments."""

    frames: Path  # data/youtube-vos/JPEGImages
    index: Path  # data/youtube-vos/train.json
    spynet: Path | None  # pretrained SPyNet file (None: random init)
    checkpoints: Path  # data/run/checkpoints (one sub-folder per configuration)
    generator: Path  # data/run/generator.pth
    cost_record: Path  # data/run/cost_raw.json
    run_record: Path  # data/run/mlflow_run.json (its spool sits beside it)
    params_used: Path  # data/run/params_used.json
    mlruns: Path  # MLflow store
    dvc_lock: Path | None = None  # dvc.lock, for the run's dataset input (None: not logged)

    @classmethod
    def under(cls, data: Path, run: Path, mlruns: Path) -> TrainPaths:
        """The train stage's layout for callers without dvc.yaml (benchmarks, tests): the prepared
        ``data`` folder, everything the run writes under ``run``, no pretrained SPyNet."""
        return cls(
            frames=data / "JPEGImages",
            index=data / "train.json",
            spynet=None,
            checkpoints=run / "checkpoints",
            generator=run / "generator.pth",
            cost_record=run / "cost_raw.json",
            run_record=run / "mlflow_run.json",
            params_used=run / "params_used.json",
            mlruns=mlruns,
        )

    def folder(self, params: Params) -> Path:
        """One folder per training configuration, so a changed config never resumes another."""
        return self.checkpoints / provenance.resume_key(params)

    @property
    def spool_dir(self) -> Path:
        """One spool per MLflow run, named after its key (beside the run reference)."""
        return self.run_record.parent / "mlflow_spool"


@dataclass
class Session:
    """Rank 0's view of a session (``run`` and ``history`` are None on other ranks)."""

    folder: Path
    start: int
    meta: dict[str, Any]
    run: Any = None
    history: History | None = None

    @property
    def cost_file(self) -> Path:
        return _cost_file(self.folder, self.start)


def _cost_file(folder: Path, start: int) -> Path:
    """The cost snapshot of the session that started after iteration ``start``."""
    return folder / "cost" / f"session_{start + 1:07d}.json"


@dataclass(frozen=True)
class TrainContext:
    """What every part of a session's loop works with, built once when the session starts."""

    params: Params
    world: World
    nets: netlib.Nets
    meter: CostMeter
    session: Session

    def step(self, clips: Clips) -> StepResult:
        """One training iteration on ``clips``."""
        return train_step(self.nets, clips, self.params, self.world)


def check_resume(params: Params, paths: TrainPaths, world: World, start: int, meta: dict) -> None:
    """Refuse a resume that would silently mix ranks, code versions or half-written files."""
    if any_rank(start != _max_start(start, world), world):
        raise UserError(
            f"{paths.folder(params)}: the ranks found different checkpoints; the checkpoint "
            "folder must be on a filesystem that every node shares"
        )
    folder = paths.folder(params)
    for partial in folder.glob(".ckpt_*.tmp"):
        partial.unlink(missing_ok=True)  # left by a kill in the middle of a checkpoint write
    written_by = meta.get("code_fingerprint")
    if start and written_by != provenance.code_fingerprint() and not params.train.resume_any_code:
        raise UserError(
            f"{folder}: its checkpoints were written by different model/training code "
            f"({written_by} vs {provenance.code_fingerprint()}); move that folder away to train "
            "afresh, or set train.resume_any_code: true to continue with the new code"
        )
    _previous_costs(folder, start)  # an unreadable snapshot fails now, not after training


def _max_start(start: int, world: World) -> int:
    if not world.distributed:
        return start
    value = torch.tensor([start], device=world.device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return int(value.item())


def open_session(
    params: Params, paths: TrainPaths, world: World, start: int, meta: dict
) -> Session:
    """The session's MLflow run (created, or re-attached on resume) and loss history."""
    folder = paths.folder(params)
    if not world.is_main:
        return Session(folder, start, meta)
    run_key, run_id, earlier = _run_identity(folder, meta)
    tags = {
        **provenance.environment_tags(world.device, world.size),
        **precision.speed_tags(params.train, world.device),
        "resume_key": provenance.resume_key(params),
        "params_hash": params_hash(params),
        "train.iterations.current": params.train.iterations,
    }
    spool = spool_path(paths.spool_dir, run_key)
    run = open_run(params, paths.mlruns, spool, run_id, tags, world.device.type)
    if earlier:  # an earlier session of this configuration ended the run
        run.set_running()
    if start:
        run.set_tags({"resumed_from": start})
    meta = {
        **meta,
        "run_key": run_key,
        "resume_key": tags["resume_key"],
        "params_hash": tags["params_hash"],
        "git_commit": tags["git.commit"],
        "code_fingerprint": tags["code_fingerprint"],
    }
    return Session(folder, start, meta, run, History(folder / "history.csv", start))


_IDENTITY = "mlflow_run.json"  # in the configuration's checkpoint folder


def _run_identity(folder: Path, meta: dict) -> tuple[str, str | None, bool]:
    """(run key, run id if known, whether an earlier session had the run) of this configuration.

    Written now, before the first step, so a crash before the first checkpoint still leaves it.
    """
    path = folder / _IDENTITY
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        run_key, run_id = str(known["run_key"]), known.get("run_id") or meta.get("run_id")
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        run_key, run_id = uuid.uuid4().hex, meta.get("run_id")
        write_json(path, {"run_key": run_key, "run_id": run_id})
        return run_key, run_id, run_id is not None
    return run_key, run_id, True


def _remember_run(session: Session) -> None:
    """The run id, once MLflow has assigned it, joins the key in checkpoints and the folder."""
    run_id = session.run.run_id
    if run_id is None or session.meta.get("run_id") == run_id:
        return
    session.meta["run_id"] = run_id
    if "run_key" in session.meta:
        identity = {"run_key": session.meta["run_key"], "run_id": run_id}
        write_json(session.folder / _IDENTITY, identity)


def checkpoint(ctx: TrainContext, step: int) -> None:
    """Checkpoint (rank 0) plus every rank's cost snapshot; all ranks must call it."""
    snapshot = ctx.meter.gather(ctx.meter.record())
    session, params = ctx.session, ctx.params
    if ctx.world.is_main:
        _remember_run(session)
        keep = params.train.keep_checkpoints
        with signals_deferred():  # Ctrl-C mid-write would leave a torn zip and a FAILED run
            path = netlib.save(ctx.nets, session.folder, step, session.meta, keep)
        if path is not None:
            log_checkpoint(session.run, path, params.tracking.log_checkpoints)
        write_record(session.cost_file, snapshot)
    barrier(ctx.world)


def _previous_costs(folder: Path, start: int) -> list[CostRecord]:
    """Cost records of the earlier sessions of this configuration, oldest first."""
    current = _cost_file(folder, start).name
    files = sorted((folder / "cost").glob("session_*.json"))
    return [read_record(f, _STALE_SNAPSHOT) for f in files if f.name < current]


def cost_record(session: Session, record: CostRecord) -> CostRecord:
    """This session's record with the earlier sessions' totals attached (for the cost stage).

    A session that trained nothing (its checkpoint was already final) reports the last session
    that did, so re-exporting a finished run keeps its measured figures.
    """
    earlier = _previous_costs(session.folder, session.start)
    current = record
    if current.totals.steps_total == 0 and earlier:
        current = earlier.pop()
    else:
        write_record(session.cost_file, current)
    return current.model_copy(update={"previous_sessions": [r.totals for r in earlier]})


def finish(ctx: TrainContext, paths: TrainPaths, record: CostRecord) -> dict[str, Any]:
    """Rank 0: final weights, cost record, run reference; returns the figures for DVC metrics."""
    session, params = ctx.session, ctx.params
    with signals_deferred(), atomic_open(paths.generator, "wb") as handle:  # official format
        torch.save(netlib.unwrap(ctx.nets.generator).state_dict(), handle)
    write_record(paths.cost_record, cost_record(session, record))
    write_json(paths.params_used, params.model_dump())
    session.run.log_artifact(session.history.path, "history")
    if params.tracking.log_checkpoints:  # the final weights, beside checkpoints/latest.pth
        session.run.log_artifact(paths.generator, "checkpoints")
    session.run.end()
    session.run.close()
    _remember_run(session)
    write_json(paths.run_record, run_record(session.run))
    _drop_stale_stashes(paths, session.run)
    last = session.history.last()
    # The figures shared with the cost report come from the same record (the cost glossary).
    totals = record.totals
    return {
        "iterations": params.train.iterations,
        "resumed_from": session.start,
        "steps_measured": totals.steps_measured,
        "step_time_median_s": totals.step_s_median,
        "clips_per_s": totals.clips_per_s,
        "skipped_updates": session.meta.get("skipped_updates", 0),
        "loss_mean": loss_means(session.history.rows, params.train.iterations),
        # A diverged run's last losses are NaN; DVC metrics are strict JSON, so they become null.
        **{
            k.replace("/", "_"): v if math.isfinite(v) else None
            for k, v in last.items()
            if k.startswith("loss/")
        },
    }


def loss_means(rows: list[dict[str, Any]], iterations: int) -> dict[str, Any]:
    """Each loss's mean over the loss-history ``rows`` of the last quarter of the iterations.

    What ``e2fgvi verify`` judges: a single iteration's loss carries the noise of one batch, and
    machines whose rounding differs reach it along slightly different GAN trajectories.
    """
    first = iterations - max(1, iterations // 4) + 1
    window = [r for r in rows if int(float(r["step"])) >= first]
    keys = dict.fromkeys(k for r in window for k in r if k.startswith("loss/"))
    means: dict[str, Any] = {"from_step": first}
    for key in keys:
        values = [float(r[key]) for r in window if r.get(key, "") != ""]
        mean = sum(values) / len(values) if values else math.nan
        means[key.removeprefix("loss/")] = mean if math.isfinite(mean) else None
    return means


def _drop_stale_stashes(paths: TrainPaths, run: Any) -> None:
    """Artifact snapshots of killed sessions (never sent, never spooled) are garbage."""
    spooled = "".join(spool.read_text() for spool in paths.spool_dir.glob("*.jsonl"))
    for stash in paths.spool_dir.glob("mlflow-stash-*"):
        if stash.resolve() != run.stash_dir and str(stash.resolve()) not in spooled:
            shutil.rmtree(stash, ignore_errors=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where training is, so the run ends KILLED like after Ctrl-C."""


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within: SIGTERM (a scheduler, ``kill``, torchrun's agent) raises ``Terminated``."""

    def interrupt(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within: SIGINT and SIGTERM wait; the first one arriving is delivered when the block ends.

    For writes that must finish once begun (a checkpoint): an interrupt inside ``torch.save``
    leaves its zip writer inconsistent, and the error it then raises hides the interrupt.
    Off the main thread (where handlers cannot be set) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, hold) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if pending:
        signum = pending[0]
        log.info("%s arrived while a checkpoint was written; stopping now it is complete",
                 signal.Signals(signum).name)  # fmt: skip
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)


@contextlib.contextmanager
def ending_run(session: Session) -> Iterator[None]:
    """Around a session's training: an exception or a signal ends the run FAILED or KILLED.

    Rank 0 tags the run with the cause and closes it (its records sent, or spooled).
    """
    try:
        yield
    except BaseException as exc:
        if session.run is not None:
            # An interrupt inside a C++ write can surface as that write's own error.
            killed = isinstance(exc, KeyboardInterrupt) or isinstance(
                exc.__context__, KeyboardInterrupt
            )
            text = one_line(exc) if isinstance(exc, UserError) else str(exc).strip()
            cause = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
            cause = cause[:500]
            # A warning: the error itself is the stage's one ERROR line (see e2fgvi.entry).
            log.warning("training stopped (%s); the MLflow run ends %s", cause,
                        "KILLED" if killed else "FAILED")  # fmt: skip
            session.run.set_tags({"failure": cause})
            session.run.end("KILLED" if killed else "FAILED")
            session.run.close()
        raise
