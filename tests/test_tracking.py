"""The tracking package: no side effects at import, internal state kept internal, spool replay,
and a tracking server that is down or never answers (records sent off the caller's thread,
bounded in memory and on disk)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow_server import BlackHole

from e2fgvi import tracking
from e2fgvi.tracking import logger as logger_module
from e2fgvi.tracking.client import HTTP_LIMITS
from e2fgvi.tracking.spool import read_records


def test_import_changes_no_environment_and_the_client_sets_the_http_limits(tmp_path):
    script = (
        "import os, sys\n"
        "import e2fgvi.tracking as t\n"
        "from e2fgvi.tracking.client import client\n"
        "names = ['MLFLOW_HTTP_REQUEST_MAX_RETRIES', 'MLFLOW_HTTP_REQUEST_TIMEOUT']\n"
        "before = [os.environ.get(n) for n in names]\n"
        "loaded = 'mlflow' in sys.modules\n"
        f"client(t.tracking_uri({str(tmp_path)!r}))\n"
        "print(before, loaded, [os.environ.get(n) for n in names])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in HTTP_LIMITS}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "[None, None] False ['0', '10']"
    # A value the user set is kept.
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "99"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.stdout.split("\n")[0] == "[None, '99'] False ['0', '99']", out.stderr


@pytest.mark.parametrize("name", ["_pending", "_lock", "_stash", "_warned", "_last_failure"])
def test_internal_state_is_not_a_constructor_argument(name):
    with pytest.raises(TypeError):
        tracking.RunLogger("sqlite:///unused.db", **{name: None})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unsent_records_are_spooled_then_replayed_in_order(tmp_path):
    spool = tmp_path / "spool" / "a1b2.jsonl"  # a spool is named after its run's key
    down = f"http://127.0.0.1:{_closed_port()}"
    logger = tracking.RunLogger(down, "spooled", run_name="away", spool=spool)
    logger.log_params({"lr": 0.5})
    for step in (1, 2, 3):
        logger.log_metrics({"loss": 1.0 / step}, step=step)
    logger.end()
    assert logger.close() is False
    header, *records = [json.loads(line) for line in spool.read_text().splitlines()]
    assert header == {"op": "run", "run_id": None, "run_key": "a1b2", "experiment": "spooled",
                      "run_name": "away", "uri": down}  # fmt: skip
    assert [r["op"] for r in records] == ["params", "metrics", "metrics", "metrics", "end"]

    pending = tracking.RunLogger.from_spool(spool, down)
    assert (pending.experiment, pending.run_name, pending.spool) == ("spooled", "away", None)
    assert pending.flush() is False and spool.exists()  # still away: the spool stays

    uri = tracking.tracking_uri(tmp_path / "mlruns")
    run_id = tracking.replay_spool(spool, uri)
    (run,) = tracking.search_runs(uri, ["spooled"])
    assert (run.run_id, run.run_name, run.status, run.params) == (
        run_id, "away", "FINISHED", {"lr": "0.5"}
    )  # fmt: skip
    assert tracking.metric_history(uri, run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    # The replayed spool keeps only its header, now naming the run: later stages find the run
    # through it, and a second replay sends nothing twice.
    assert read_records(spool) == ({**header, "run_id": run_id}, [])
    assert tracking.attach(uri, None, spool).run_id == run_id
    assert tracking.replay_spool(spool, uri) == run_id
    assert tracking.metric_history(uri, run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    assert len(tracking.search_runs(uri, ["spooled"])) == 1


def _timed(call) -> float:
    begin = time.monotonic()
    call()
    return time.monotonic() - begin


def _wait_for(condition, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_server_that_never_answers_stalls_no_call_and_not_close(tmp_path, monkeypatch, caplog):
    """Every call returns at once; once the server is known to hang, close spools at once."""
    timeout_s = 6
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    spool = tmp_path / "spool" / "c3d4.jsonl"
    checkpoint = tmp_path / "ckpt_0000002.pth"
    checkpoint.write_bytes(b"weights" * 1000)
    with BlackHole() as hole:
        logger = tracking.RunLogger(hole.url, "hung", spool=spool, retry_interval_s=0.0)
        calls = [
            lambda: logger.log_params({"lr": 0.5}),
            *(lambda s=s: logger.log_metrics({"loss": 1.0 / s}, step=s) for s in (1, 2, 3)),
            lambda: logger.log_artifact(checkpoint, "checkpoints", name="latest.pth"),
            logger.end,
        ]
        slowest = max(_timed(call) for call in calls)
        _wait_for(lambda: "unreachable" in caplog.text, limit_s=timeout_s * 10)
        closing = _timed(lambda: logger.close())
        assert hole.accepted >= 1  # the requests did reach the server, which never answered
    assert slowest < 1.0, f"a call waited {slowest:.1f} s for the server"
    assert closing < 1.0, f"close waited {closing:.1f} s for the server"
    header, records = read_records(spool)
    assert header["run_id"] is None
    assert [r["op"] for r in records] == ["params", "metrics", "metrics", "metrics", "artifact",
                                          "end"]  # fmt: skip


def test_only_the_newest_checkpoint_waits_for_upload_during_an_outage(tmp_path):
    spool = tmp_path / "spool" / "e5f6.jsonl"
    down = f"http://127.0.0.1:{_closed_port()}"
    logger = tracking.RunLogger(down, "outage", spool=spool, retry_interval_s=0.0)
    for step in (2, 4, 6):
        checkpoint = tmp_path / f"ckpt_{step:07d}.pth"
        checkpoint.write_bytes(f"state {step}".encode())
        logger.log_artifact(checkpoint, "checkpoints", name="latest.pth")
        checkpoint.unlink()  # rotated away by the next checkpoints
    strip = tmp_path / "step_0000006.png"
    strip.write_bytes(b"png")
    logger.log_artifact(strip, "samples")
    assert logger.close() is False
    _, records = read_records(spool)
    kept = [(r["dir"], Path(r["path"]).read_bytes()) for r in records if r["op"] == "artifact"]
    assert kept == [("checkpoints", b"state 6"), ("samples", b"png")]
    snapshots = [p for p in spool.parent.rglob("*") if p.is_file() and p != spool]
    assert len(snapshots) == 2, snapshots  # the older checkpoints' snapshots are gone
    uri = tracking.tracking_uri(tmp_path / "mlruns")
    run_id = tracking.replay_spool(spool, uri)
    assert tracking.list_artifacts(uri, run_id, "checkpoints") == ["checkpoints/latest.pth"]


def test_the_backlog_is_bounded_and_what_it_drops_is_counted(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(logger_module, "MAX_PENDING", 100, raising=False)
    spool = tmp_path / "spool" / "a7b8.jsonl"
    down = f"http://127.0.0.1:{_closed_port()}"
    for session in range(2):  # a second session of the same run appends to its spool
        logger = tracking.RunLogger(down, "backlog", spool=spool, retry_interval_s=0.0)
        logger.log_params({"lr": 0.5})
        for step in range(1, 1001):
            logger.log_metrics({"loss": float(step)}, step=session * 1000 + step)
        logger.end()
        assert logger.close() is False
    header, records = read_records(spool)
    assert len(records) <= 100
    assert [r["op"] for r in records].count("params") == 2 and records[-1]["op"] == "end"
    steps = [r["step"] for r in records if r["op"] == "metrics"]
    assert steps == sorted(steps) and steps[-1] == 2000 and steps[0] < 500  # thinned evenly
    assert "dropped" in caplog.text
    dropped = header["dropped_metric_records"]
    assert dropped + len(steps) == 2000
    uri = tracking.tracking_uri(tmp_path / "mlruns")
    run_id = tracking.replay_spool(spool, uri)
    (run,) = tracking.search_runs(uri, ["backlog"])
    assert run.run_id == run_id and run.tags["tracking.dropped_metric_records"] == str(dropped)
