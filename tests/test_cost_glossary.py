"""One vocabulary: docs/cost.md's glossary, the record's fields and train.json agree."""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import pytest
import torch

from e2fgvi.config import CostParams
from e2fgvi.cost.forecast import FORECAST_KEYS
from e2fgvi.cost.glossary import LABELS
from e2fgvi.cost.summary import RunCost, summarise, summary_metrics
from e2fgvi.measure.meter import CostMeter

SHARED_WITH_TRAIN = ("clips_per_s", "step_time_median_s", "steps_measured")


def glossary_fields(text: str) -> set[str]:
    """Every backticked name in the first cell of the glossary table of docs/cost.md."""
    section = text.split("\n## Glossary\n", 1)[1].split("\n## ", 1)[0]
    fields: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 2:
            fields |= set(re.findall(r"`([a-z0-9_]+)`", cells[1]))
    return fields


def test_the_glossary_names_every_field_of_the_record_and_nothing_else(repo_root):
    documented = glossary_fields((repo_root / "docs" / "cost.md").read_text(encoding="utf-8"))
    record = set(RunCost.model_fields)
    forecast = {f"forecast_{key}" for key in FORECAST_KEYS} | {"forecast_derivations"}
    expected = record | forecast | {"step_clips_per_s"}
    assert documented - expected == set(), "documented but not in the record"
    assert expected - documented == set(), "in the record but not in docs/cost.md's glossary"
    assert set(LABELS) == record  # every measured figure has a human name in cost.md
    assert set(SHARED_WITH_TRAIN) <= documented


def _metered_record():
    meter = CostMeter(CostParams(warmup_steps=1), torch.device("cpu"), 2)
    meter.start()
    for step, pause in enumerate((0.03, 0.01, 0.02, 0.05, 0.01), 1):
        with meter.compute():
            time.sleep(pause)
        meter.end_step(step)
    return meter, meter.gather(meter.stop())


def test_train_json_and_the_cost_record_agree_on_every_figure_they_share(
    tmp_path, params, monkeypatch
):
    """The train stage's figures (session.finish) and the cost stage's, from one record."""
    from e2fgvi import tracking
    from e2fgvi.train import session
    from e2fgvi.train.session import TrainPaths
    from e2fgvi.train.telemetry import History

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = TrainPaths.under(tmp_path, tmp_path / "run", tmp_path / "mlruns")
    folder = paths.folder(params)
    History(folder / "history.csv", 0).append(5, {"loss/generator": 1.0})
    run = tracking.RunLogger(tracking.tracking_uri(tmp_path / "mlruns"), "agree",
                             artifact_root=tmp_path / "mlruns")  # fmt: skip
    state = session.Session(folder, 0, {}, run, History(folder / "history.csv", 5))
    meter, record = _metered_record()
    ctx = session.TrainContext(params, None, SimpleNamespace(generator=torch.nn.Linear(1, 1)),
                               meter, state)  # fmt: skip
    train = session.finish(ctx, paths, record)
    cost = summary_metrics(summarise(record, CostParams(), "fp32"))
    shared = set(train) & set(cost)
    assert shared == set(SHARED_WITH_TRAIN)
    for key in shared:
        assert train[key] == cost[key], key
    # The one throughput: global clips over the mean measured step (not the median).
    assert cost["clips_per_s"] == pytest.approx(2 / record.totals.step_s_mean)
    assert cost["clips_per_s"] != pytest.approx(2 / record.totals.step_s_median)


def test_the_committed_train_json_and_cost_json_agree(repo_root):
    """What `make repro` committed: the two reports of one run name one figure one way."""
    train = json.loads((repo_root / "reports" / "train.json").read_text())
    cost = json.loads((repo_root / "reports" / "cost" / "cost.json").read_text())
    stale = "; reports/ predate this code: rerun `dvc repro` and commit reports/"
    for key in SHARED_WITH_TRAIN:
        assert key in train and key in cost, key + stale
        assert train[key] == pytest.approx(cost[key], rel=1e-12), key + stale
