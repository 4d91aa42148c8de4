"""The tracking package: no side effects at import, internal state kept internal, spool replay."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from e2fgvi import tracking
from e2fgvi.tracking.client import HTTP_LIMITS
from e2fgvi.tracking.spool import marker_path


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
    spool = tmp_path / "spool" / "mlflow_spool.jsonl"
    down = f"http://127.0.0.1:{_closed_port()}"
    logger = tracking.RunLogger(down, "spooled", run_name="away", spool=spool)
    logger.log_params({"lr": 0.5})
    for step in (1, 2, 3):
        logger.log_metrics({"loss": 1.0 / step}, step=step)
    logger.end()
    assert logger.close() is False
    header, *records = [json.loads(line) for line in spool.read_text().splitlines()]
    assert header == {"op": "run", "run_id": None, "experiment": "spooled", "run_name": "away"}
    assert [r["op"] for r in records] == ["params", "metrics", "metrics", "metrics", "end"]

    pending = tracking.RunLogger.from_spool(spool, down)
    assert (pending.experiment, pending.run_name, pending.spool) == ("spooled", "away", None)
    assert pending.flush() is False and spool.exists()  # still away: the spool stays

    uri = tracking.tracking_uri(tmp_path / "mlruns")
    run_id = tracking.replay_spool(spool, uri)
    assert run_id and not spool.exists() and marker_path(spool).read_text().strip() == run_id
    (run,) = tracking.search_runs(uri, ["spooled"])
    assert (run.run_id, run.run_name, run.status, run.params) == (
        run_id, "away", "FINISHED", {"lr": "0.5"}
    )  # fmt: skip
    assert tracking.metric_history(uri, run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    # A later stage finds the run through the marker once the spool is gone.
    assert tracking.attach(uri, None, spool).run_id == run_id
