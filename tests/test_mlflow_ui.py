"""The MLflow UI in a real browser: a real ``mlflow server`` renders a run with cost metrics.

A run with ``cost/...`` metrics is written with ``e2fgvi.tracking.RunLogger`` into a SQLite store,
``mlflow server`` is started on it (127.0.0.1, a free port, one worker), and headless Chromium
renders the run page. The rendered DOM must show the run name and a cost metric row with its
value; the screenshot is kept in reports/ui/ and its path printed to the terminal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import mlflow_server
import pytest

from e2fgvi.tracking import RunLogger, experiment_id

RUN_NAME = "ui-check-run"
METRICS = {"cost/device_hours": 1.2345, "cost/money": 3.0864}
# Flags for headless chromium here: no sandbox (root in CI), no network chatter.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",  # tall enough that the metrics table is in the picture
    "--virtual-time-budget=15000",
]

pytestmark = pytest.mark.slow


def _chromium() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    if found:
        return found
    reason = "chromium is not installed (apt-get install -y --no-install-recommends chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run installs it before make test")
    pytest.skip(reason)


class _Rows(HTMLParser):
    """Text of the cells of every ARIA table row (MLflow's tables are role=row/cell divs)."""

    VOID = frozenset(
        [
            "area",
            "base",
            "br",
            "col",
            "embed",
            "hr",
            "img",
            "input",
            "link",
            "meta",
            "source",
            "track",
            "wbr",
        ]
    )

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.depth = 0
        self.cell_depth: int | None = None  # depth of the open cell element, None outside cells

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        self.depth += 1
        role = dict(attrs).get("role")
        if role == "row":
            self.rows.append([])
        elif role == "cell" and self.rows:
            self.rows[-1].append("")
            self.cell_depth = self.depth

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if self.cell_depth == self.depth:
            self.cell_depth = None
        self.depth -= 1

    def handle_data(self, data):
        if self.cell_depth is not None:
            self.rows[-1][-1] += data


def _logged_run(store: Path) -> tuple[str, str, str]:
    uri = f"sqlite:///{store / 'mlflow.db'}"
    logger = RunLogger(uri, "ui-check", run_name=RUN_NAME, artifact_root=store / "artifacts")
    logger.log_params({"train.iterations": 12})
    logger.log_metrics(METRICS, step=0)
    logger.end()
    assert logger.close()
    return uri, experiment_id(uri, "ui-check"), logger.run_id


def _browse(chromium: str, url: str, profile: Path, *action: str) -> subprocess.CompletedProcess:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_run_page_renders_cost_metrics(tmp_path, repo_root, capsys):
    chromium = _chromium()
    uri, exp_id, run_id = _logged_run(tmp_path)
    server = mlflow_server.start(uri, tmp_path / "artifacts", tmp_path / "server.log")
    try:
        runs_page = f"{server.url}/#/experiments/{exp_id}/runs"
        listing = _browse(chromium, runs_page, tmp_path / "profile-list", "--dump-dom")
        page = f"{server.url}/#/experiments/{exp_id}/runs/{run_id}"
        dom = _browse(chromium, page, tmp_path / "profile-dom", "--dump-dom")
        shot = repo_root / "reports" / "ui" / "mlflow_run.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        picture = _browse(chromium, page, tmp_path / "profile-shot", f"--screenshot={shot}")
    finally:
        mlflow_server.stop(server.process)
    assert listing.returncode == 0 and RUN_NAME in listing.stdout, (
        "run missing on the experiment page"
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert RUN_NAME in dom.stdout
    parser = _Rows()
    parser.feed(dom.stdout)
    cells = {row[0].strip(): row[1].strip() for row in parser.rows if len(row) >= 2}
    for name, value in METRICS.items():
        assert cells.get(name) == str(value), f"{name} not rendered as {value}: {cells}"
    assert picture.returncode == 0 and shot.stat().st_size > 10_000, picture.stderr[-2000:]
    with capsys.disabled():
        print(f"\nMLflow UI: healthy after {server.waited_s:.1f} s; run page screenshot: {shot}")
