"""``e2fgvi profile``: the loader workers one GPU needs, from a measured worker rate."""

from __future__ import annotations

import pytest

from e2fgvi.cost.profile import loader_workers, measure_loader
from e2fgvi.cost.report import markdown


def test_workers_are_the_needed_rate_over_one_workers_rate_rounded_up():
    forecast = {"clips_per_gpu": 2, "step_s": {"mean": 0.5, "low": 0.4, "high": 0.6}}
    got = loader_workers(forecast, {"clips_per_s_per_worker": 1.5})
    assert got["clips_per_s_needed_per_gpu"] == pytest.approx(4.0)
    assert got["workers_per_gpu"] == 3  # 4 / 1.5 = 2.67
    assert loader_workers(forecast, {"clips_per_s_per_worker": 4.0})["workers_per_gpu"] == 1
    assert loader_workers(None, {"clips_per_s_per_worker": 4.0})["workers_per_gpu"] is None


def test_one_workers_rate_is_measured_on_the_prepared_data(params, sample_dataset):
    loader = measure_loader(params, sample_dataset, clips=2)
    assert loader["clips_per_s_per_worker"] > 0 and loader["decode"] == "exact"
    forecast = {"clips_per_gpu": 1, "step_s": {"mean": 0.01, "low": 0.01, "high": 0.01}}
    report = {
        "measured": {},
        "forecast": None,
        "conditions": {},
        "notes": [],
        "loader": loader_workers(forecast, loader),
    }
    workers = report["loader"]["workers_per_gpu"]
    assert workers >= 1
    assert f"**{workers} loader worker(s)**" in markdown(report)
