"""Overhead of the cost meter per training step, in µs and as % of a typical CPU step.

Three figures:
  1. main-thread time inside meter calls, as the meter measures it itself;
  2. the same from outside: an empty loop with and without the meter (A/B, medians of 5);
  3. the sampler thread's CPU per sampling round, with the fake NVML from the tests (Python-side
     cost only: a real NVML call adds driver time, which only a machine with a GPU can measure).
The "typical CPU step" is a small conv-net training step at the sample profile's train size
(8 frames of 60x108).

    PYTHONPATH=src .venv/bin/python benchmarks/cost_meter.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_nvml import FakeGpu, FakeNvml

from e2fgvi.config import CostParams
from e2fgvi.measure.meter import CostMeter

STEPS = 5000


def bare_loop(steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        pass
    return time.perf_counter() - t0


def metered_loop(steps: int) -> tuple[float, float]:
    meter = CostMeter(CostParams(warmup_steps=10), torch.device("cpu"), 1)
    meter.start()
    t0 = time.perf_counter()
    for step in range(steps):
        with meter.data_wait():
            pass
        with meter.compute():
            pass
        meter.metrics_for_step(meter.end_step(step))
    elapsed = time.perf_counter() - t0
    record = meter.stop()
    return elapsed, record.overhead.main_thread_s


def typical_cpu_step(steps: int = 22) -> dict:
    """The typical step run under the meter: its median and the meter's in-situ overhead."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 3, 3, padding=1)
    )
    optimiser = torch.optim.Adam(net.parameters())
    batch = torch.randn(8, 3, 60, 108, generator=torch.Generator().manual_seed(0))
    meter = CostMeter(CostParams(warmup_steps=2), torch.device("cpu"), 8)
    meter.start()
    for step in range(steps):
        with meter.data_wait():
            clips = batch.clone()
        with meter.compute():
            optimiser.zero_grad()
            (net(clips) - clips).abs().mean().backward()
            optimiser.step()
        meter.metrics_for_step(meter.end_step(step))
    record = meter.stop()
    return {"step_s": record.step_s.median, **record.overhead.model_dump()}


def sampler_round_us(rounds: int = 2000) -> float:
    gpu = FakeGpu(uuid="GPU-00000000-0000-0000-0000-000000000000")
    meter = CostMeter(CostParams(), torch.device("cpu"), 1, nvml=FakeNvml([gpu]), nvml_device=0)
    meter.start()
    probe = meter._gpu
    t0 = time.thread_time()
    for _ in range(rounds):
        gpu.energy_mj += 1000
        probe.sample()
    per_round = (time.thread_time() - t0) / rounds
    meter.stop()
    return 1e6 * per_round


def main() -> None:
    bare, metered, self_measured = [], [], []
    for _ in range(5):
        bare.append(bare_loop(STEPS))
        elapsed, own = metered_loop(STEPS)
        metered.append(elapsed)
        self_measured.append(own)
    ab_us = 1e6 * (statistics.median(metered) - statistics.median(bare)) / STEPS
    own_us = 1e6 * statistics.median(self_measured) / STEPS
    typical = typical_cpu_step()
    step_s = typical["step_s"]
    round_us = sampler_round_us()
    interval = CostParams().nvml_interval_s
    print(f"typical CPU step (conv net, 8x3x60x108, fwd+bwd+Adam): {step_s * 1e3:.1f} ms")
    print(
        f"meter, self-measured main-thread time: {own_us:.1f} µs/step "
        f"({100 * own_us * 1e-6 / step_s:.3f} % of the typical step)"
    )
    print(
        f"meter, A/B loop difference (all calls incl. metrics_for_step): {ab_us:.1f} µs/step "
        f"({100 * ab_us * 1e-6 / step_s:.3f} % of the typical step)"
    )
    print(
        f"meter, in situ beside the typical step (cold caches after torch ops): "
        f"{typical['per_step_us']:.1f} µs/step "
        f"({100 * typical['fraction_of_step_time']:.3f} % of step time)"
    )
    print(
        f"sampler round with fake NVML: {round_us:.1f} µs CPU; at {interval} s interval "
        f"{100 * round_us * 1e-6 / interval:.4f} % of one core"
    )


if __name__ == "__main__":
    main()
