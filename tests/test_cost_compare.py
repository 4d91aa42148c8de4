"""`e2fgvi cost compare`: quality per cost and its frontier, paging, across experiments.

Runs are real MLflow runs in a SQLite store, read back through MLflow's search API with a page
size smaller than the number of runs, so every page boundary is crossed.
"""

from __future__ import annotations

import json

import pytest

from e2fgvi import cli, tracking
from e2fgvi.cost import compare

# (experiment, run name, device kind, device-hours, money, PSNR, SSIM); None: not evaluated.
RUNS = (
    ("cpu-sweep", "lr1e-4", "cpu", 1.0, 0.1, 20.0, 0.80),
    ("cpu-sweep", "lr2e-4", "cpu", 2.0, 0.2, 22.0, 0.84),
    ("cpu-sweep", "long", "cpu", 3.0, 0.3, 21.0, 0.82),  # dominated by lr2e-4
    ("gpu-runs", "h100-a", "cuda", 0.5, 1.25, 25.0, 0.90),
    ("gpu-runs", "h100-b", "cuda", 1.0, 2.5, 24.0, 0.89),  # dominated by h100-a
    ("gpu-runs", "profile", "cuda", None, None, None, None),
    ("other", "unrelated", "cpu", 0.1, 0.01, 30.0, 0.95),
)


@pytest.fixture(scope="module")
def store(module_folder):
    mlruns = module_folder("compare") / "mlruns"
    uri = tracking.tracking_uri(mlruns)
    for experiment, name, kind, hours, money, psnr, ssim in RUNS:
        logger = tracking.RunLogger(
            uri=uri, experiment=experiment, run_name=name, artifact_root=mlruns
        )
        logger.set_tags({"cost.kind": "profile" if psnr is None else "train",
                         "cost.device_kind": kind, "cost.currency": "USD",
                         "cost.device": "cpu" if kind == "cpu" else "NVIDIA H100"})  # fmt: skip
        logger.log_params({"cost.currency": "USD"})
        metrics = {"measured/device_hours": hours, "measured/money_usd": money, "eval/psnr": psnr,
                   "eval/ssim": ssim, "forecast/device_hours": 100.0}  # fmt: skip
        logger.log_metrics(metrics)
        assert logger.close()
    return mlruns, uri


def _json(store, capsys, *options: str) -> list[dict]:
    mlruns, _ = store
    argv = ["cost", "compare", "--mlruns", str(mlruns), "--format", "json", *options]
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_search_reads_every_page(store):
    _, uri = store
    every = tracking.search_runs(uri, None, page_size=2)
    assert len(every) == len(RUNS)  # 7 runs in 4 pages of 2, 3 experiments in 2 pages of 2
    assert {r.run_name for r in every} == {name for _, name, *_ in RUNS}
    assert [r.run_id for r in every] == [r.run_id for r in tracking.search_runs(uri, None)]


def test_one_page_alone_would_cut_the_runs(store):
    """The control: MLflow really returns one page of 2, so the test above crossed pages."""
    from e2fgvi.tracking.client import client

    _, uri = store
    ids = [e.experiment_id for e in client(uri).search_experiments()]
    page = client(uri).search_runs(ids, max_results=2)
    assert len(page) == 2 and page.token


def test_quality_per_cost_and_the_frontier_per_device_kind(store, capsys):
    rows = _json(store, capsys, "--quality", "--page-size", "2",
                 "--experiment", "cpu-sweep", "--experiment", "gpu-runs")  # fmt: skip
    by_name = {r["run"]: r for r in rows}
    assert set(by_name) == {"lr1e-4", "lr2e-4", "long", "h100-a", "h100-b"}  # evaluated only
    frontier = {name for name, r in by_name.items() if r["frontier"] == "yes"}
    assert frontier == {"lr1e-4", "lr2e-4", "h100-a"}
    # dB per extra device-hour along each frontier; none for the cheapest or off the frontier.
    assert by_name["lr1e-4"]["db_per_extra_device_hour"] is None
    assert by_name["lr2e-4"]["db_per_extra_device_hour"] == pytest.approx((22.0 - 20.0) / 1.0)
    assert by_name["long"]["db_per_extra_device_hour"] is None  # dominated
    assert by_name["h100-a"]["db_per_extra_device_hour"] is None
    # Cheapest first within each device kind; GPU and CPU hours never share a frontier.
    assert [r["run"] for r in rows] == ["lr1e-4", "lr2e-4", "long", "h100-a", "h100-b"]


def test_quality_table_text(store, capsys):
    mlruns, _ = store
    argv = ["cost", "compare", "--mlruns", str(mlruns), "--quality", "--page-size", "3"]
    assert cli.main(argv) == 0
    header, *body = capsys.readouterr().out.splitlines()
    assert "dB per extra device-h" in header and "frontier" in header and len(body) == 6
    assert any(line.startswith("other") and "yes" in line for line in body)
    assert any("h100-b" in line and line.split()[-2:] == ["no", "-"] for line in body)
    assert all("USD" in line for line in body)


def test_compare_across_experiments_with_paging(store, capsys):
    everything = _json(store, capsys, "--page-size", "2")
    assert {r["experiment"] for r in everything} == {"cpu-sweep", "gpu-runs", "other"}
    assert len(everything) == len(RUNS)  # the profile run has cost figures: it is listed
    two = _json(store, capsys, "--page-size", "1", "--experiment", "gpu-runs",
                "--experiment", "other")  # fmt: skip
    assert sorted(r["run"] for r in two) == ["h100-a", "h100-b", "profile", "unrelated"]


def test_frontier_rule():
    rows = [
        {"device_kind": "cpu", "device_hours": 1.0, "psnr": 20.0},
        {"device_kind": "cpu", "device_hours": 1.0, "psnr": 20.0},  # a tie dominates nothing
        {"device_kind": "cpu", "device_hours": 1.0, "psnr": 19.0},
        {"device_kind": "cuda", "device_hours": 9.0, "psnr": 19.5},
    ]
    marked = compare.quality_rows([{**r, "psnr_unused": None} for r in rows])
    assert [r["frontier"] for r in marked] == ["yes", "yes", "no", "yes"]


def test_bad_page_size_is_one_line(store, capsys):
    mlruns, _ = store
    assert cli.main(["cost", "compare", "--mlruns", str(mlruns), "--page-size", "0"]) == 1
    assert "--page-size must be positive" in capsys.readouterr().err
