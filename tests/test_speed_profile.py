"""``e2fgvi profile``: the loader workers one device needs, from a measured worker rate."""

from __future__ import annotations

import pytest

from e2fgvi.cost.profile import loader_line, loader_workers, measure_loader


def test_workers_are_the_needed_rate_over_one_workers_rate_rounded_up():
    got = loader_workers(2, 0.5, {"clips_per_s_per_worker": 1.5})
    assert got["clips_per_s_needed_per_device"] == pytest.approx(4.0)
    assert got["workers_per_device"] == 3  # 4 / 1.5 = 2.67
    assert loader_workers(2, 0.5, {"clips_per_s_per_worker": 4.0})["workers_per_device"] == 1
    missing = loader_workers(2, None, {"clips_per_s_per_worker": 4.0})
    assert missing["workers_per_device"] is None
    assert loader_line(missing) == "loader workers not computed: no forecast step time"


def test_one_workers_rate_is_measured_on_the_prepared_data(params, sample_dataset):
    loader = measure_loader(params, sample_dataset, clips=2)
    assert loader["clips_per_s_per_worker"] > 0 and loader["decode"] == "exact"
    workers = loader_workers(1, 0.01, loader)
    assert workers["workers_per_device"] >= 1
    line = loader_line(workers)
    assert f"i.e. {workers['workers_per_device']} loader worker(s)" in line
