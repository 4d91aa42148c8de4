"""How well does a short profiling window forecast a longer run? (CPU, real torch workload)

Profiles WARMUP + WINDOW steps of a small conv-net training step with ``profile_steps`` (the
same code ``e2fgvi profile`` runs), forecasts LONG steps with ``forecast``, then runs LONG
metered steps and compares the forecast wall time with the measured one.

    PYTHONPATH=src .venv/bin/python benchmarks/forecast_accuracy.py [LONG]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from e2fgvi.config import CostParams, ForecastParams
from e2fgvi.cost.forecast import StepSample, forecast
from e2fgvi.cost.profile import profile_steps
from e2fgvi.measure.meter import CostMeter

WARMUP, WINDOW = 3, 20


def make_step(clips: int):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 3, 3, padding=1)
    )
    optimiser = torch.optim.Adam(net.parameters())
    batch = torch.randn(clips, 3, 60, 108, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        optimiser.zero_grad()
        (net(batch) - batch).abs().mean().backward()
        optimiser.step()

    return step


def main() -> None:
    long = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    clips = 8
    plan = ForecastParams(
        iterations=long, global_batch=clips, gpus=1, profile_warmup=WARMUP, profile_steps=WINDOW
    )
    cfg = CostParams(warmup_steps=WARMUP, forecast=plan)
    step = make_step(clips)
    short = profile_steps(step, cfg, torch.device("cpu"), clips)
    result = forecast(StepSample.from_rank(short), cfg, np.random.default_rng(0))

    meter = CostMeter(cfg, torch.device("cpu"), clips)
    meter.start()
    for i in range(WARMUP + long):
        with meter.compute():
            step()
        meter.end_step(i)
    measured_s = meter.stop().measured_time_s

    wall = {k: v * 3600 for k, v in result.wall_h.model_dump().items()}
    error = wall["mean"] / measured_s - 1
    inside = wall["low"] <= measured_s <= wall["high"]
    print(f"profile window: {WARMUP} warm-up + {WINDOW} measured steps of {clips}x3x60x108")
    print(
        f"forecast for {long} steps: {wall['mean']:.1f} s "
        f"(band {wall['low']:.1f}-{wall['high']:.1f} s); measured {measured_s:.1f} s"
    )
    print(f"error {100 * error:+.1f} %; measured inside band: {inside}")


if __name__ == "__main__":
    main()
