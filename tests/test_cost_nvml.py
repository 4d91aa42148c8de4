"""The NVML layer against an injected fake NVML: mapping, energy counter, fallback, wrap."""

from __future__ import annotations

import json
import time

import pytest
import torch
from fake_nvml import FakeClock, FakeGpu, FakeNvml, NVMLError

from e2fgvi.config import CostParams
from e2fgvi.measure.meter import CostMeter
from e2fgvi.measure.nvml import (
    EnergyCounter,
    GpuProbe,
    NvmlUnavailableError,
    load_nvml,
    resolve_handle,
    visible_entries,
)
from e2fgvi.measure.sampling import SamplerThread

UUIDS = [f"GPU-{i}aaaaaaa-1111-2222-3333-44444444444{i}" for i in range(4)]


@pytest.fixture
def nvml():
    return FakeNvml([FakeGpu(uuid=u) for u in UUIDS])


def test_visible_entries_follow_cuda_parsing():
    assert visible_entries(None) is None
    assert visible_entries("") == []
    assert visible_entries("2, 0") == ["2", "0"]
    assert visible_entries("1,-1,2") == ["1"]  # CUDA ignores everything after an invalid entry


def test_indices_map_through_visible_devices(nvml):
    assert resolve_handle(nvml, 0, "2,0") is nvml.gpus[2]
    assert resolve_handle(nvml, 1, "2,0") is nvml.gpus[0]
    assert resolve_handle(nvml, 3, None) is nvml.gpus[3]  # unset: every GPU, NVML order


def test_uuids_and_prefixes_map_to_their_gpu(nvml):
    assert resolve_handle(nvml, 0, f"{UUIDS[3]},{UUIDS[1]}") is nvml.gpus[3]
    assert resolve_handle(nvml, 1, "GPU-1aaa,GPU-2a") is nvml.gpus[2]  # CUDA accepts prefixes
    # The UUID torch reports for the device wins over the index mapping.
    assert resolve_handle(nvml, 0, "0", uuid=UUIDS[2]) is nvml.gpus[2]


def test_unmappable_devices_are_one_line_errors(nvml):
    with pytest.raises(NvmlUnavailableError, match=r"MIG instance.*not supported"):
        resolve_handle(nvml, 0, "MIG-0123abcd-aaaa")
    with pytest.raises(NvmlUnavailableError, match=r"cuda:2 is not among"):
        resolve_handle(nvml, 2, "0,1")
    with pytest.raises(NvmlUnavailableError, match="no matching GPU"):
        resolve_handle(nvml, 0, "GPU-ffff")


def test_nvml_init_failure_is_unavailable():
    broken = FakeNvml([], init_error=NVMLError("NVML Shared Library Not Found"))
    with pytest.raises(NvmlUnavailableError, match="Shared Library Not Found"):
        load_nvml(broken)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the GPU-less path")
def test_real_pynvml_without_gpu_is_unavailable():
    with pytest.raises(NvmlUnavailableError, match="NVML unavailable"):
        load_nvml()


def _probe(gpu: FakeGpu) -> tuple[GpuProbe, FakeClock]:
    clock = FakeClock()
    return GpuProbe(FakeNvml([gpu]), gpu, clock=clock), clock


def test_energy_from_the_cumulative_counter():
    gpu = FakeGpu(uuid=UUIDS[0], energy_mj=5_000_000, power_mw=100_000)
    probe, clock = _probe(gpu)
    probe.sample()
    for _ in range(4):
        clock.now += 2.0
        gpu.energy_mj += 300_000  # 300 J in 2 s: 150 W, while the power reading says 100 W
        probe.sample()
    summary = probe.summary()
    assert summary.energy_source == "counter"
    assert summary.energy_j == pytest.approx(1200.0)
    assert summary.energy_power_integral_j == pytest.approx(800.0)  # kept for comparison
    assert summary.mean_power_w == pytest.approx(150.0)
    assert summary.samples == 5 and summary.counter_wraps == 0


def test_missing_counter_falls_back_to_power_integral():
    gpu = FakeGpu(uuid=UUIDS[0], energy_mj=None, power_mw=100_000)
    probe, clock = _probe(gpu)
    probe.sample()
    clock.now += 2.0
    gpu.power_mw = 200_000
    probe.sample()
    clock.now += 1.0
    probe.sample()
    summary = probe.summary()
    assert summary.energy_source == "power_integral"
    assert "Not Supported" in summary.energy_counter_error
    assert summary.energy_j == pytest.approx(150 * 2 + 200 * 1)  # trapezoid rule
    assert gpu.calls["energy"] == 1  # a missing counter is not asked again


def test_counter_wraparound_is_added_not_lost():
    gpu = FakeGpu(uuid=UUIDS[0], energy_mj=2**64 - 500_000)
    probe, clock = _probe(gpu)
    probe.sample()
    clock.now += 10.0
    gpu.energy_mj = 1_500_000  # wrapped: 500 J before the wrap + 1500 J after
    probe.sample()
    summary = probe.summary()
    assert summary.energy_j == pytest.approx(2000.0)
    assert summary.counter_wraps == 1 and summary.counter_resets == 0


def test_counter_reset_uses_power_for_that_interval():
    gpu = FakeGpu(uuid=UUIDS[0], energy_mj=10**12, power_mw=250_000)
    probe, clock = _probe(gpu)
    probe.sample()
    clock.now += 4.0
    gpu.energy_mj = 1000  # driver reloaded: counter restarted
    probe.sample()
    clock.now += 4.0
    gpu.energy_mj += 1_000_000  # 1000 J counted normally afterwards
    probe.sample()
    summary = probe.summary()
    assert summary.counter_resets == 1 and summary.fallback_intervals == 1
    assert summary.energy_j == pytest.approx(250 * 4 + 1000)


def test_energy_counter_plausibility_bound():
    counter = EnergyCounter(100, modulus=1000)
    assert counter.update(50, max_delta_mj=2000)  # 100 -> wrap at 1000 -> 50: 950 mJ
    assert counter.total_mj == 950 and counter.wraps == 1
    assert not counter.update(10, max_delta_mj=5)  # a "wrap" of 960 mJ is implausible here
    assert counter.resets == 1


def test_unsupported_fields_are_null_and_not_retried():
    gpu = FakeGpu(uuid=UUIDS[0], temp=None)
    probe, clock = _probe(gpu)
    for _ in range(3):
        probe.sample()
        clock.now += 1.0
    summary = probe.summary()
    assert summary.unsupported == ["temp_c"]
    assert summary.stats["temp_c"].model_dump() == {"mean": None, "max": None}
    assert gpu.calls["temperature"] == 1
    assert summary.stats["util_pct"].max == 50.0
    assert summary.name == "NVIDIA H100 80GB HBM3"  # bytes decoded


class _Counting:
    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = 0, fail

    def sample(self) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("sensor gone")


def test_sampler_thread_polls_and_survives_failing_probe():
    good, bad = _Counting(), _Counting(fail=True)
    sampler = SamplerThread([good, bad], interval_s=0.01)
    sampler.start()
    time.sleep(0.15)
    sampler.stop()
    assert good.calls >= 4  # start + several ticks + stop
    assert bad.calls == good.calls and sampler.errors == bad.calls
    assert sampler.cpu_s >= 0.0


def test_meter_record_with_fake_gpu(nvml):
    cfg = CostParams(warmup_steps=1, nvml_interval_s=0.01)
    meter = CostMeter(cfg, torch.device("cpu"), 1, nvml=nvml, nvml_device=1, visible_devices="3,2")
    meter.start()
    for step in range(3):
        with meter.compute():
            time.sleep(0.02)
        nvml.gpus[2].energy_mj += 1_000
        timing = meter.end_step(step)
    metrics = meter.metrics_for_step(timing)
    record = meter.stop()
    json.dumps(record.model_dump(mode="json"), allow_nan=False)
    assert record.gpu.uuid == UUIDS[2]
    assert record.gpu.energy_source == "counter"
    assert record.gpu.energy_j == pytest.approx(3.0)
    assert record.conditions.gpu_count == 1 and record.device_name == "cpu"
    # Raw samples go to MLflow's System metrics tab, not among the per-step cost metrics.
    assert metrics.keys() == {"cost/step_s", "cost/data_wait_s", "cost/compute_s",
                              "cost/step_clips_per_s"}  # fmt: skip
    assert record.gpu.stats["power_w"].max == 100.0


def test_report_of_a_fake_gpu_run(nvml, tmp_path):
    import csv

    import numpy as np

    from e2fgvi.cost.forecast import Schedule
    from e2fgvi.cost.report import write_report
    from e2fgvi.cost.summary import build_report

    cfg = CostParams(warmup_steps=1, nvml_interval_s=0.01)
    meter = CostMeter(cfg, torch.device("cpu"), 1, nvml=nvml, nvml_device=0, visible_devices="0")
    meter.start()
    for step in range(4):
        with meter.compute():
            time.sleep(0.02)
        nvml.gpus[0].energy_mj += 36_000  # 36 J per step
        meter.end_step(step)
    gathered = meter.gather(meter.stop())
    schedule = Schedule(iterations=40, devices=1, global_batch=1)  # stopped at 4 of 40
    report = build_report(gathered, cfg, "fp32", np.random.default_rng(0), schedule)
    measured = report.measured
    assert measured.devices == 1 and measured.energy_gpu_kwh == pytest.approx(144 / 3.6e6)
    assert measured.device_kind == "cuda" and measured.hours_unit == "GPU-hours"
    assert measured.device_hours == pytest.approx(gathered.totals.wall_s / 3600)
    assert measured.money == pytest.approx(
        measured.device_hours * cfg.price_per_gpu_hour + measured.energy_kwh * cfg.price_per_kwh
    )
    assert report.forecast.energy_kwh is not None  # measured power carries into forecast
    assert report.forecast.hours_unit == "GPU-hours"
    write_report(tmp_path, report, gathered.ranks)
    rows = list(csv.DictReader((tmp_path / "power.csv").open()))
    assert len(rows) > 2 and all(float(r["power_w"]) > 0 for r in rows)  # the data plot's rows
    assert "(GPU-hours) |" in (tmp_path / "cost.md").read_text()
    assert "energy from counter" in (tmp_path / "report.json").read_text()


def test_meter_keeps_running_when_the_gpu_cannot_be_mapped(nvml):
    cfg = CostParams(warmup_steps=0)
    meter = CostMeter(cfg, torch.device("cpu"), 1, nvml=nvml, nvml_device=7, visible_devices=None)
    meter.start()  # NVML has 4 GPUs: index 7 raises NVMLError inside NVML itself
    meter.end_step(0)
    record = meter.stop()
    assert record.gpu is None and record.gpu_note == "Invalid Argument"
