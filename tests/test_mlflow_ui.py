"""The MLflow UI in a real browser: what a planner opens shows what ran, its cost and images.

A run is written the way the stages write it (``e2fgvi.tracking``: its name, description,
``config.*`` params, losses, eval scores, ``measured/…`` cost, labelled sample strips at their
steps) into a SQLite store; ``mlflow server`` is started on it (127.0.0.1, a free port, one
worker), and headless Chromium renders the run page, its model-metrics page and the runs table
(the experiment's shared cost view). The rendered DOM must show the description, the cost with
its currency, the sections in order and the strip images; the screenshots are kept in
reports/ui/ (test artifacts) and their paths printed to the terminal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import mlflow_server
import pytest
import torch

from e2fgvi import tracking
from e2fgvi.tracking import RunLogger, experiment_id
from e2fgvi.train.images import write_strip

RUN_NAME = "e2fgvi-hq-108x60-1cpu-fp32-abc1234"
FIGURES = {"money": 3.0864, "device_hours": 1.2345, "wall_h": 1.2345, "energy_kwh": None,
           "device_hours_per_1k_iter": 0.25, "step_time_median_s": 0.9}  # fmt: skip
METRICS = tracking.names.measured_metrics(FIGURES, "USD", 0.1)
WHAT = {"variant": "E2FGVI-HQ", "iterations": 4, "size": "108x60", "devices": 1, "device": "CPU",
        "precision": "fp32", "global_batch": 1, "data": "the embedded sample videos"}  # fmt: skip
STRIP_STEPS = (0, 2, 4)
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
    "--virtual-time-budget=40000",  # charts load lazily; a loaded 2-core machine is slow
]
# The window of each page: tall enough for the whole page, wide enough for the table's columns.
WINDOWS = {"run": "1400,1800", "metrics": "1400,3000", "runs": "3000,700"}

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
    names = tracking.names
    logger = RunLogger(uri, "ui-check", run_name=RUN_NAME, artifact_root=store / "artifacts")
    shape = {"variant": "e2fgvi_hq", "width": 108, "height": 60, "precision": "fp32"}
    logger.log_params(
        {"train.iterations": 4}
        | names.config_params(shape, {"devices": 1, "global_batch": 1, "iterations": 4})
        | names.device_params("cpu", "x86_64", 1)
    )
    logger.set_note("ran", tracking.ran_sentence(WHAT))
    logger.set_note("cost", tracking.cost_sentence(FIGURES, "USD", "CPU device-hours"))
    torch.manual_seed(0)
    for step in range(1, 5):
        logger.log_metrics(
            names.step_metrics({"loss/generator": 3 / step, "cost/step_s": 0.9}), step
        )
    for step in STRIP_STEPS:
        frames = torch.rand(1, 2, 3, 60, 108) * 2 - 1
        strip = write_strip(
            store / f"strip_{step}.png", frames, torch.zeros(1, 2, 1, 60, 108), frames
        )
        logger.log_image(strip, key=names.IMAGE_KEY, step=step)
    logger.log_metrics({"eval/psnr": 21.5, "eval/ssim": 0.75} | METRICS, step=0)
    logger.share_cost_view("USD")
    logger.end()
    assert logger.close()
    return uri, experiment_id(uri, "ui-check"), logger.run_id


def _browse(chromium: str, url: str, profile: Path, window: str, *action: str):
    command = [chromium, *CHROMIUM_FLAGS, f"--window-size={window}", f"--user-data-dir={profile}",
               *action, url]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def _text(dom: str) -> str:
    """The page's text, one space between words."""
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


@pytest.fixture(scope="module")
def pages(module_folder, repo_root):
    """Each page's DOM and screenshot (reports/ui/mlflow_<page>.png), from a real server."""
    chromium = _chromium()
    folder = module_folder("ui")
    uri, exp_id, run_id = _logged_run(folder)
    server = mlflow_server.start(uri, folder / "artifacts", folder / "server.log")
    base = f"{server.url}/#/experiments/{exp_id}"
    urls = {"run": f"{base}/runs/{run_id}", "metrics": f"{base}/runs/{run_id}/model-metrics",
            "runs": f"{base}/runs?viewStateShareKey={tracking.names.VIEW_KEY}"}  # fmt: skip
    shots = repo_root / "reports" / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    found = {}
    try:
        for page, url in urls.items():
            window = WINDOWS[page]
            # The image card fetches its strips lazily: on a loaded machine the DOM can be dumped
            # before they arrive, so that page is read again (at most thrice) until they have.
            for attempt in range(3 if page == "metrics" else 1):
                profile = folder / f"dom-{page}-{attempt}"
                dom = _browse(chromium, url, profile, window, "--dump-dom")
                assert dom.returncode == 0, dom.stderr[-2000:]
                if "get-artifact?path=images" in dom.stdout:
                    break
            shot = shots / f"mlflow_{page}.png"
            picture = _browse(
                chromium, url, folder / f"shot-{page}", window, f"--screenshot={shot}"
            )
            assert picture.returncode == 0 and shot.stat().st_size > 10_000, picture.stderr[-2000:]
            found[page] = (dom.stdout, shot)
    finally:
        mlflow_server.stop(server.process)
    return found


def test_the_run_page_opens_with_its_description_and_cost_in_its_currency(pages, capsys):
    dom, shot = pages["run"]
    text = _text(dom)
    assert RUN_NAME in text
    assert "Description " + tracking.ran_sentence(WHAT) in text  # the note, under its heading
    assert "It cost 3.09 USD: 1.23 CPU device-hours" in text
    parser = _Rows()
    parser.feed(dom)
    cells = {row[0].strip(): row[1].strip() for row in parser.rows if len(row) >= 2}
    assert cells.get("measured/money_usd") == "3.0864", cells
    assert cells.get("measured/device_hours") == "1.2345", cells
    with capsys.disabled():
        print(f"\nMLflow run page: {shot}")


def test_model_metrics_open_with_the_learning_and_show_the_strips(pages, capsys):
    dom, shot = pages["metrics"]
    text = _text(dom)
    sections = [text.find(f"{name} (") for name in ("eval", "loss", "measured", "samples")]
    assert -1 not in sections and sections == sorted(sections), sections
    images = re.findall(r'<img[^>]+src="get-artifact\?path=images%2F([^"&]+)', dom)
    assert images, "no strip image rendered in the image card"
    assert all(name.startswith("samples~training_clip%2Bstep%2B0%2B") for name in images)
    with capsys.disabled():
        print(f"\nMLflow model metrics: {shot}")


def test_the_runs_table_shows_the_description_and_cost_columns(pages, capsys):
    dom, shot = pages["runs"]
    text = _text(dom)
    assert RUN_NAME[:20] in text and "E2FGVI-HQ trained for 4 iterations" in text
    for column in ("measured/money_usd", "measured/device_hours", "eval/psnr", "config.devices"):
        assert column in text, f"{column} not a column of the shared cost view"
    assert "3.0864" in text and "21.5" in text
    with capsys.disabled():
        print(f"\nMLflow runs table: {shot}")
