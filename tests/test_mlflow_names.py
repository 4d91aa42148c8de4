"""What a planner reads in the MLflow UI: metric, param and run names, the run's description.

Names are checked as functions; the note, the experiment's description and the run name against
a real MLflow store (SQLite, through ``RunLogger``).
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from e2fgvi import tracking
from e2fgvi.config import DataParams
from e2fgvi.data.lineage import dataset_name
from e2fgvi.tracking import names
from e2fgvi.tracking.client import client
from e2fgvi.train.images import sample_strip

FIGURES = {"money": 0.25, "device_hours": 2.0, "device_hours_per_1k_iter": 0.5,
           "wall_h": 0.25, "energy_kwh": None, "step_time_median_s": 1.8,
           "meter_overhead_pct": 0.01, "devices": 8}  # fmt: skip
SHAPE = {"variant": "e2fgvi_hq", "width": 432, "height": 240, "precision": "fp32",
         "clips_per_device": 1, "local_frames": 5}  # fmt: skip
SCHEDULE = {"devices": 8, "global_batch": 8, "iterations": 500_000}


def test_measured_cost_has_units_and_the_currency_in_its_names():
    metrics = names.measured_metrics(FIGURES, "EUR", price_per_device_hour=2.0)
    assert metrics["measured/money_eur"] == 0.25
    assert metrics["measured/money_eur_per_1k_iter"] == 1.0  # 0.5 device-hours x 2.0 EUR
    assert metrics["measured/device_hours"] == 2.0 and metrics["measured/wall_hours"] == 0.25
    assert metrics["measured/energy_kwh"] is None  # unmeasured: skipped by the logger
    # Constants of the run (meter overhead, device count) are no metrics: they are in the
    # report artifact and the device.* params.
    assert not [k for k in metrics if "overhead" in k or k.endswith("devices")]
    assert all(k.startswith("measured/") for k in metrics)


def test_forecasts_are_their_own_namespace_with_the_band_as_one_tag():
    bands = {"money": (10.0, 8.0, 13.0), "device_hours": (4.0, 3.0, 5.0), "energy_kwh": None}
    assert names.forecast_metrics(bands, "USD") == {
        "forecast/money_usd": 10.0,
        "forecast/device_hours": 4.0,
        "forecast/energy_kwh": None,
    }
    tags = names.forecast_tags(bands, "USD")
    assert tags == {"forecast.money_usd_range": "8 to 13", "forecast.device_hours_range": "3 to 5"}


def test_per_step_series_leave_the_cost_namespace_and_sort_after_the_learning():
    renamed = names.step_metrics({"cost/step_s": 1.0, "guard/skipped_updates": 0.0,
                                  "loss/generator": 2.0})  # fmt: skip
    assert renamed == {"step/time_s": 1.0, "step/skipped_updates": 0.0, "loss/generator": 2.0}
    # MLflow 3.17 sorts the model-metrics sections by prefix name: the learning comes first.
    sections = sorted({"eval", "loss", "lr", "measured", "step", "forecast"})
    assert sections[:2] == ["eval", "forecast"] and sections.index("loss") < sections.index("step")
    assert sections.index("loss") < sections.index("measured")


def test_hardware_tables_and_prices_stay_out_of_the_params():
    flat = {"train.iterations": 40, "cost.peak_tflops.V100.bf16": 15.7, "cost.currency": "USD",
            "data.http.retries": 5}  # fmt: skip
    assert names.visible_params(flat) == {"train.iterations": 40}
    assert names.price_params("USD", 2.5, 0.15) == {
        "cost.currency": "USD",
        "cost.price_per_device_hour": 2.5,
        "cost.price_per_kwh": 0.15,
    }


def test_training_and_profile_runs_share_config_keys():
    keys = names.config_params(SHAPE, SCHEDULE)
    assert keys["config.variant"] == "e2fgvi_hq" and keys["config.devices"] == 8
    assert keys["config.iterations"] == 500_000 and keys["config.local_frames"] == 5
    assert set(names.device_params("cuda", "NVIDIA H100", 8)) == {
        "device.kind",
        "device.name",
        "device.count",
    }
    back = names.run_figures(
        {"measured/money_usd": 1.0, "forecast/device_hours": 3.0, "eval/psnr": 30.0},
        {"cost.currency": "USD", "device.count": "8"},
    )
    assert back["money"] == 1.0 and back["forecast_device_hours"] == 3.0
    assert back["devices"] == 8.0 and back["psnr"] == 30.0


def test_a_run_is_named_for_what_ran(tmp_path, monkeypatch):
    label = names.run_label(SHAPE, 8, "cuda")
    assert label == "e2fgvi-hq-432x240-8gpu-fp32"
    monkeypatch.chdir(tmp_path)
    assert tracking.run_name("", {}, label=label) == label  # outside git
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    (tmp_path / "f").write_text("x")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run([*git, *args], cwd=tmp_path, check=True)
    sha = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    assert tracking.run_name("", {}, label=label) == f"{label}-{sha}"
    assert tracking.run_name("", {"DVC_EXP_NAME": "try-lr"}, label=label) == "try-lr"
    assert tracking.run_name("mine", {}, label=label) == "mine"


def test_the_data_set_is_named_for_what_it_is():
    assert dataset_name(DataParams(source="sample")) == "e2fgvi-sample-train"
    assert dataset_name(DataParams(source="url"), "test") == "youtube-vos-test"


def test_the_note_has_every_stages_sentence_in_order_whatever_the_stage_order(tmp_path):
    uri = tracking.tracking_uri(tmp_path / "mlruns")
    logger = tracking.RunLogger(uri, "note-test", artifact_root=tmp_path / "mlruns")
    scored = tracking.scored_sentence({"psnr": 30.12345, "ssim": 0.9, "vfid": None}, 1, "108x60")
    what = {"variant": "E2FGVI-HQ", "iterations": 40, "size": "108x60", "devices": 1,
            "device": "CPU", "precision": "fp32", "global_batch": 1,
            "data": "the sample"}  # fmt: skip
    ran = tracking.ran_sentence(what)
    cost = tracking.cost_sentence(FIGURES, "USD", "CPU device-hours")
    logger.set_note("scored", scored)
    logger.set_note("cost", cost)
    logger.set_note("ran", ran)
    logger.share_cost_view("USD")
    assert logger.close()
    mlflow = client(uri)
    run = mlflow.get_run(logger.run_id)
    assert run.data.tags["mlflow.note.content"] == f"{ran} {cost} {scored}"
    assert ran.startswith("E2FGVI-HQ trained for 40 iterations at 108x60 on 1 CPU device in fp32")
    assert "It cost 0.25 USD: 2 CPU device-hours" in cost and "energy not measured" in cost
    assert "PSNR 30.12 dB" in scored and "VFID not measured" in scored
    experiment = mlflow.get_experiment(run.info.experiment_id)
    described = experiment.tags["mlflow.note.content"]
    assert "Training runs of E2FGVI" in described
    assert f"(#/experiments/{experiment.experiment_id}/runs?viewStateShareKey=cost)" in described
    view = json.loads(experiment.tags["mlflow.sharedViewState.cost"])
    assert "metrics.`measured/money_usd`" in view["selectedColumns"]


def test_the_sample_strip_has_its_rows_labelled():
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 60, 108) * 2 - 1
    masks = torch.zeros(2, 1, 60, 108)
    strip = sample_strip(frames, masks, frames)
    assert strip.shape[0] == 3 * 60 and strip.shape[1] > 2 * 108  # a label band on the left
    band = strip[:, : strip.shape[1] - 2 * 108]
    for row in range(3):  # white text burnt into each row's dark band
        assert (band[row * 60 : (row + 1) * 60] > 200).any()
    assert np.array_equal(strip[:60, -2 * 108 :], strip[120:, -2 * 108 :])  # no holes: same


@pytest.mark.parametrize("currency", ["USD", "eur", "€"])
def test_a_currency_always_makes_a_valid_metric_name(currency):
    name = next(iter(names.measured_metrics({"money": 1.0}, currency, 1.0)))
    assert name.startswith("measured/money_") and name.isascii()
