"""How well do the first k steps of a run forecast the whole run? (a benchmark, not a promise)

Runs one metered run of TOTAL steps (after a warm-up) with the training loop's own ``CostMeter``,
then, for each k, forecasts the run's measured time from its first k measured steps with the
same ``forecast`` the profile and cost stage use, and prints the error against what the TOTAL
steps took, whether it fell inside the band, and the machine's load. It then repeats the
forecast from every disjoint window of k steps in the run and says how often the band held.
Target: |error| < 5 % from k <= 200 on a steady machine; every k must leave a run at least
10x longer than itself.

Workloads: ``toy`` (default, seconds per hundred steps: a conv net on 8x3x60x108, forward,
backward, Adam) and ``sample`` (the real E2FGVI-HQ training step of params.yaml on one clip,
about 2.5 s a step on 2 idle cores: TOTAL 2000 takes well over an hour).

    PYTHONPATH=src .venv/bin/python benchmarks/forecast_accuracy.py [--total N] [--k K ...]
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import torch

from e2fgvi.config import CostParams, load_params
from e2fgvi.cost.forecast import Schedule, StepSample, forecast
from e2fgvi.measure.meter import CostMeter

CLIPS = 8


def toy_step():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 3, 3, padding=1)
    )
    optimiser = torch.optim.Adam(net.parameters())
    batch = torch.randn(CLIPS, 3, 60, 108, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        optimiser.zero_grad()
        (net(batch) - batch).abs().mean().backward()
        optimiser.step()

    return step, CLIPS, f"conv net on {CLIPS}x3x60x108"


def sample_step():
    from e2fgvi.train.profiling import make_training_step

    params = load_params("params.yaml")
    t = params.train
    text = f"{params.model.variant} {t.width}x{t.height} {t.num_local_frames}+{t.num_ref_frames}"
    return make_training_step(params, torch.device("cpu"), 1), 1, text + ", 1 clip"


def run_metered(step, clips: int, warmup: int, total: int) -> list[float]:
    """Step times (s) of ``total`` measured steps after ``warmup``, as the meter records them."""
    meter = CostMeter(CostParams(warmup_steps=warmup), torch.device("cpu"), clips)
    meter.start()
    times = []
    for i in range(warmup + total):
        with meter.compute():
            step()
        timing = meter.end_step(i)
        if not timing.warmup:
            times.append(timing.total_s)
    meter.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=2000, help="measured steps of the run")
    parser.add_argument("--k", type=int, nargs="+", default=[20, 50, 100, 200])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workload", choices=["toy", "sample"], default="toy")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    step, clips, text = (toy_step if args.workload == "toy" else sample_step)()
    load_before = os.getloadavg()
    times = run_metered(step, clips, args.warmup, args.total)
    load_after = os.getloadavg()
    actual = sum(times)
    tenth = max(1, len(times) // 10)
    drift = statistics.fmean(times[-tenth:]) / statistics.fmean(times[:tenth]) - 1
    print(
        f"workload: {text}; {args.warmup} warm-up + {args.total} measured steps; "
        f"torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs"
    )
    print(
        f"load average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/"
        f"{load_before[2]:.1f}, after {load_after[0]:.1f}/{load_after[1]:.1f}/"
        f"{load_after[2]:.1f}"
    )
    print(
        f"measured: {actual:.1f} s in total, step median {statistics.median(times) * 1e3:.1f} "
        f"ms, CV {statistics.pstdev(times) / statistics.fmean(times):.2f}, last tenth vs "
        f"first tenth {100 * drift:+.1f} %"
    )
    schedule = Schedule(iterations=args.total, devices=1, global_batch=clips)
    print("    k  run/k  forecast s   band s            error    inside band")
    for k in args.k:
        if args.total < 10 * k:
            print(f"{k:5d}  skipped: the run is not 10x longer than k")
            continue
        errors = [
            window_forecast(times[start : start + k], clips, schedule, actual)
            for start in range(0, args.total - k + 1, k)
        ]
        mean, low, high, error, inside = errors[0]
        print(
            f"{k:5d}  {args.total // k:5d}  {mean:10.1f}   {low:7.1f}-{high:<7.1f}  "
            f"{100 * error:+6.1f} %  {inside}   (first {k} steps, as the profile does)"
        )
        held = sum(e[4] for e in errors)
        worst = max(abs(e[3]) for e in errors)
        print(
            f"       every disjoint window of {k} steps: band holds {held} of {len(errors)}; "
            f"error {100 * min(e[3] for e in errors):+.1f} % .. "
            f"{100 * max(e[3] for e in errors):+.1f} %, |error| <= {100 * worst:.1f} %"
        )


def window_forecast(window, clips, schedule, actual):
    """Forecast the whole run from one window of steps: mean, low, high (s), error, inside band."""
    sample = StepSample.from_times(window, clips)
    fc = forecast(sample, CostParams(), np.random.default_rng(0), schedule, "cpu")
    mean, low, high = (getattr(fc.wall_h, p) * 3600 for p in ("mean", "low", "high"))
    return mean, low, high, mean / actual - 1, low <= actual <= high


if __name__ == "__main__":
    main()
