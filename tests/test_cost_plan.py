"""The plan and what was measured for it: bookkeeping, labels, the budget table, units.

A plan is a params file; the profile measures its step here (a small real conv-net step stands
in for E2FGVI so these tests take seconds; `test_cost_stage` runs real E2FGVI-HQ steps).
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch
from helpers import ROOT, write_params

from e2fgvi import tracking
from e2fgvi.config import CostParams, ForecastParams, load_params
from e2fgvi.cost import budget, profile_report, profile_run
from e2fgvi.cost.forecast import Schedule, StepSample
from e2fgvi.cost.plan import load_plan
from e2fgvi.cost.profile import build_profile
from e2fgvi.errors import UserError
from e2fgvi.tracking.client import client

CFG = CostParams(forecast=ForecastParams(profile_warmup=1, profile_steps=3))


def _toy_step(params, device, clips: int):
    """A small real training step (conv net, loss, backward, Adam) on ``clips`` clips."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 3, 1))
    optimiser = torch.optim.Adam(net.parameters())
    batch = torch.randn(clips, 3, 24, 24, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        optimiser.zero_grad()
        (net(batch) - batch).abs().mean().backward()
        optimiser.step()

    return step


def _plan(tmp_path, **train):
    overrides = {f"train__{key}": value for key, value in train.items()}
    return load_plan(write_params(tmp_path / "plan", **overrides))


def _profile(tmp_path, clips=None, extra=(), **train):
    plan_params, plan = _plan(tmp_path, **train)
    return build_profile(
        plan, plan_params, CFG, torch.device("cpu"), np.random.default_rng(0), list(extra),
        clips, make_step=_toy_step,
    )  # fmt: skip


def test_the_default_plan_is_the_official_recipe():
    _, plan = load_plan(ROOT / "params.official.yaml")
    step = plan.step
    assert (step.variant, step.width, step.height) == ("e2fgvi", 432, 240)
    assert (step.local_frames, step.ref_frames, step.clips_per_device) == (5, 3, 1)
    assert step.precision == "fp32"
    assert plan.schedule == Schedule(iterations=500_000, global_batch=8, devices=8)
    _, four = load_plan(ROOT / "params.official.yaml", devices=4, iterations=1000)
    assert four.step.clips_per_device == 2 and four.schedule.iterations == 1000
    with pytest.raises(UserError, match=r"params\.official\.yaml: global batch 8 does not split"):
        load_plan(ROOT / "params.official.yaml", devices=3)


def test_a_plan_measured_as_planned_is_labelled_measured(tmp_path):
    report = _profile(tmp_path, batch_size=1, nproc_per_node=1, iterations=100)
    assert report.differences == []
    assert report.forecast is not None and not report.forecast.derived
    (row,) = report.budget  # batch 1: one device only
    assert row.basis == "measured" and row.derivation == [] and row.devices == 1
    text = profile_report.markdown(report)
    assert text.startswith("# What the plan ")  # the answer first, in sentences
    first = text.split("\n\n")[1]
    assert " would take " in first and "CPU device-hours" in first and "USD" in first
    assert "The measured step is the plan's step on one device." in text
    assert "| 1 | fp32 | 1 | measured |" in text


def test_a_plan_that_differs_from_what_ran_is_labelled_and_its_band_widens(tmp_path):
    exact = _profile(tmp_path / "a", batch_size=4, nproc_per_node=1, iterations=100)
    scaled = _profile(tmp_path / "b", clips=1, batch_size=4, nproc_per_node=1, iterations=100)
    (difference,) = scaled.differences
    assert (difference.field, difference.plan, difference.measured) == ("clips_per_device", 4, 1)
    assert "assumed linear in clips per device" in difference.handling
    fc = scaled.forecast
    assert fc.derived
    assert "measured at 1 clips per device, multiplied by 4 for 4" in fc.derivation[0]
    window = StepSample.from_rank(scaled.measurements[0].record)
    measured_mean = float(np.mean(window.means))
    assert fc.step_s.mean == pytest.approx(4 * measured_mean)
    width = (fc.step_s.high - fc.step_s.low) / fc.step_s.mean
    exact_fc = exact.forecast
    assert width > (exact_fc.step_s.high - exact_fc.step_s.low) / exact_fc.step_s.mean
    assert fc.step_s.high >= 1.25 * fc.step_s.mean  # one derivation: at least its margin
    text = profile_report.markdown(scaled)
    assert "Where they differ:" in text and "- clips_per_device: plan 4, measured 1" in text
    assert "Derived, not measured:" in text


def test_a_precision_that_cannot_run_here_is_substituted_and_said(tmp_path):
    report = _profile(tmp_path, batch_size=2, nproc_per_node=2, amp="fp16", iterations=100)
    assert report.measurements[0].step.precision == "fp32"
    fields = {d.field: d for d in report.differences}
    assert set(fields) == {"precision", "devices"}
    assert "fp16 cannot run on cpu" in fields["precision"].handling
    assert "DDP scaling not measured" in fields["devices"].handling
    derivation = report.forecast.derivation
    assert any("fp16 cannot run on cpu" in step for step in derivation) and len(derivation) == 2


def test_budget_table_rows_per_device_count_and_precision(tmp_path):
    report = _profile(tmp_path, extra=["bf16"], batch_size=8, nproc_per_node=8, iterations=1000)
    assert [m.step.precision for m in report.measurements] == ["fp32", "bf16"]
    rows = {(r.devices, r.precision): r for r in report.budget}
    assert sorted(rows) == [(n, p) for n in (1, 2, 4, 8) for p in ("bf16", "fp32")]
    one, eight = rows[(1, "fp32")], rows[(8, "fp32")]
    assert one.clips_per_device == 8 and eight.clips_per_device == 1
    assert one.basis == eight.basis == "derived"
    assert "measured at 1 clips per device, multiplied by 8 for 8" in one.derivation[0]
    assert eight.derivation == [
        "DDP scaling assumed perfect: 8 devices, 1 measured; each device's step as fast as the "
        "measured one, communication not modelled"
    ]
    # Same clips per device in total: the device-hours agree, the wall time splits 8 ways.
    assert one.device_hours.mean == pytest.approx(eight.device_hours.mean)
    assert one.wall_h.mean == pytest.approx(8 * eight.wall_h.mean)
    assert one.fits is None  # CPU: not probed
    flat = profile_report.profile_metrics(report)
    assert flat["bf16_forecast_wall_h"] == pytest.approx(rows[(8, "bf16")].wall_h.mean)


def test_budget_marks_clips_that_do_not_fit_and_device_counts_split_the_batch():
    assert budget.device_counts(8, 8) == [1, 2, 4, 8]
    assert budget.device_counts(16, 32) == [1, 2, 4, 8, 16]
    assert budget.device_counts(3, 6) == [1, 2, 3]
    measured = budget.MeasuredSteps(
        precision="bf16",
        sample=StepSample.from_times([0.5, 0.5], 2),
        device_kind="cuda",
        power_w=400.0,
        max_clips_per_device=2,
    )
    rows = budget.budget_table(
        [measured],
        Schedule(iterations=10, devices=4, global_batch=8),
        CFG,
        np.random.default_rng(0),
    )
    fits = {r.devices: r.fits for r in rows}
    assert fits == {1: False, 2: False, 4: True, 8: True}
    assert [r.basis for r in rows] == ["derived", "derived", "derived", "derived"]
    assert rows[2].energy_kwh.mean == pytest.approx(rows[2].device_hours.mean * 0.4)
    text = "\n".join(budget.budget_lines(rows, "GPU-hours", "USD"))
    assert "no: accumulate gradients" in text and "| Device-hours (GPU-hours) |" in text


def _params(experiment: str):
    params = load_params(ROOT / "params.yaml")
    tracked = params.tracking.model_copy(update={"experiment": experiment})
    return params.model_copy(update={"tracking": tracked, "cost": CFG})


def test_cpu_never_yields_gpu_hours(tmp_path, caplog):
    """Report, markdown, flat metrics, MLflow keys and tags, and log lines of a CPU profile."""
    started_ms = int(time.time() * 1000)
    report = _profile(tmp_path, batch_size=8, nproc_per_node=8, iterations=1000)
    assert (
        report.hours_unit == "CPU device-hours" and report.forecast.hours_unit == report.hours_unit
    )
    mlruns = tmp_path / "mlruns"
    with caplog.at_level(logging.INFO):
        profile_report.log_summary(report)
        paths = profile_report.write(tmp_path / "out", report)
        profile_run.track(report, _params("plan-test"), mlruns, paths, started_ms)
    uri = tracking.tracking_uri(mlruns)
    (run,) = tracking.search_runs(uri, ["plan-test"])
    texts = [p.read_text() for p in paths] + [caplog.text, json.dumps(run.tags)]
    texts += [*run.metrics, *run.params]
    for text in texts:
        assert "gpu_hours" not in text and "GPU-h" not in text and "gpu-h" not in text.lower()
    assert "CPU device-hours" in caplog.text and "CPU device-hours" in paths[2].read_text()
    assert run.tags["cost.device_kind"] == "cpu" and run.tags["cost.kind"] == "profile"
    assert run.metrics["forecast/device_hours"] == pytest.approx(report.forecast.device_hours.mean)
    low, high = report.forecast.money.low, report.forecast.money.high
    assert run.tags["forecast.money_usd_range"] == f"{low:.4g} to {high:.4g}"
    # The plan's configuration and where it was measured, under a training run's keys.
    assert run.params["config.clips_per_device"] == "1" and run.params["config.devices"] == "8"
    assert run.params["device.count"] == "1" and run.params["device.kind"] == "cpu"
    assert {"measured/step_time_median_s", "measured/device_hours_per_1k_iter",
            "measured/money_usd_per_1k_iter", "forecast/money_usd"} <= set(run.metrics)  # fmt: skip
    assert not [key for key in run.metrics if key.startswith("cost/")]
    # The standard source tags, and a duration that covers the profiling, not only its logging.
    full = client(uri).get_run(run.run_id)
    assert full.data.tags["mlflow.source.name"] == profile_run.PROFILE_SOURCE
    assert full.data.tags["mlflow.user"] and full.data.tags["mlflow.source.git.commit"]
    assert full.info.start_time == started_ms
    assert (
        full.info.end_time - full.info.start_time >= report.measurements[0].summary.wall_h * 3.6e6
    )
    note = full.data.tags["mlflow.note.content"]
    assert note.startswith("Profile of the plan") and "CPU device-hours" in note and "USD" in note
    flat = json.loads(paths[0].read_text())
    assert all(v is None or isinstance(v, int | float) for v in flat.values())
