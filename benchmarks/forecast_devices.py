"""The device forecast against what the E2FGVI authors published, and against this CPU.

Published (docs/official-e2fgvi.md §1.3): the official 500k iterations took about 5 days on
8x V100 and about a week on 8x GTX 1080 Ti; one clip of 8 frames at 240x432 fits in 11 GB per
GPU, two do not fit in 12 GB. Each is predicted from the counted step of params.official.yaml
and the device table, nothing fitted per device: first with the table's stated roofline
assumptions, then with ONE global factor on the step time fitted on the V100 figure and judged
on the 1080 Ti. The sanity check runs the same roofline with this CPU's nominal peak (cores x
clock x FLOPs per cycle) and a copy bandwidth measured here against a measured step of the
official plan on this CPU (docs/speed.md: 143.5 s, one thread; override with --cpu-step-s).

    PYTHONPATH=src python benchmarks/forecast_devices.py [--cpu-step-s 143.5 --cpu-threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from e2fgvi.config import load_params
from e2fgvi.cost.device_forecast import device_row, memory_band
from e2fgvi.cost.device_table import DeviceKind, shipped_table
from e2fgvi.cost.opcount import count_step
from e2fgvi.cost.plan import load_plan
from e2fgvi.cost.roofline import roofline_step

PUBLISHED_DAYS = {"V100": 5.0, "1080 Ti": 7.0}  # 8 devices, 500k iterations, 1 clip each
MEMORY = [("1080 Ti", 1, 11.0, "fits"), ("1080 Ti", 2, 12.0, "does not fit")]


def _cpu_ghz() -> float:
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    return float("nan")


def copy_bandwidth(threads: int, mb: int = 256) -> float:
    """Bytes/s of a large tensor copy (read + write), best of 5, with ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.ones(mb * 2**18), torch.empty(mb * 2**18)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - start)
    return 2 * a.numel() * 4 / best


def validate_published(base, table, cfg, plan, tf32: bool) -> None:
    print(
        "| published | predicted, stated roofline | error | predicted, one global factor | error |"
    )
    print("| --- | --- | --- | --- | --- |")
    rows = {
        kind: device_row(
            base, table, cfg, plan.schedule.model_copy(update={"devices": 8}), kind, tf32
        )
        for kind in PUBLISHED_DAYS
    }
    factor = PUBLISHED_DAYS["V100"] / rows["V100"].wall_days.mean
    for kind, days in PUBLISHED_DAYS.items():
        wall = rows[kind].wall_days
        fitted = wall.mean * factor
        note = "(fitted here)" if kind == "V100" else "(judged)"
        print(
            f"| 8x {kind}: ~{days:g} days | {wall.mean:.2f} days "
            f"({wall.low:.2f}-{wall.high:.2f}) | "
            f"{(wall.mean - days) / days * 100:+.1f} % | {fitted:.2f} days {note} | "
            f"{(fitted - days) / days * 100:+.1f} % |"
        )
    print(f"\nglobal factor on the step time fitted on the V100: x{factor:.3f}\n")
    print("| published | predicted memory per device (GiB) | predicted | agrees |")
    print("| --- | --- | --- | --- |")
    for _kind, clips, capacity, verdict in MEMORY:
        band = memory_band(base.scaled(clips), table)
        said = (
            "fits"
            if band.high <= capacity
            else "does not fit"
            if band.low > capacity
            else "uncertain"
        )
        print(
            f"| {clips} clip(s) in {capacity:g} GB: {verdict} | {band.mean:.2f} ({band.low:.2f}-"
            f"{band.high:.2f}) | {said} | {'yes' if said == verdict else 'no'} |"
        )


def cpu_sanity(base, table, tf32: bool, step_s: float, threads: int, flops_per_cycle: int) -> None:
    ghz = _cpu_ghz()
    peak = threads * ghz * flops_per_cycle / 1000  # TFLOP/s
    bandwidth = copy_bandwidth(threads) / 1e9
    cpu = DeviceKind(
        match=["cpu"], peak_tflops={"fp32": peak}, bandwidth_gb_s=bandwidth, memory_gb=1,
        board_power_w=1, interconnect_gb_s=1, source="this machine",
    )  # fmt: skip
    predicted = roofline_step(base.ops, cpu, table.roofline, tf32)
    print(
        f"\nCPU sanity check ({threads} thread(s), {ghz:.2f} GHz x {flops_per_cycle} FLOP/cycle = "
        f"{peak * 1000:.0f} GFLOP/s nominal, copy bandwidth measured {bandwidth:.1f} GB/s, load "
        f"{os.getloadavg()[0]:.1f}): roofline {predicted:.1f} s vs measured {step_s:.1f} s, error "
        f"{(predicted - step_s) / step_s * 100:+.1f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="params.official.yaml")
    parser.add_argument("--cpu-step-s", type=float, default=143.5)
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--flops-per-cycle", type=int, default=32, help="fp32, per core")
    args = parser.parse_args()
    plan_params, plan = load_plan(args.plan)
    table = shipped_table()
    start = time.perf_counter()
    base = count_step(plan_params, 1)
    print(
        f"counted {args.plan}'s step at 1 clip in {time.perf_counter() - start:.1f} s: "
        f"{base.flops:.4g} FLOPs, {base.bytes:.4g} bytes moved, {base.op_count} operators, "
        f"peak live {base.peak_live_bytes / 2**30:.2f} GiB\n"
    )
    cfg = load_params("params.yaml").cost
    validate_published(base, table, cfg, plan, plan_params.train.tf32)
    cpu_sanity(
        base, table, plan_params.train.tf32, args.cpu_step_s, args.cpu_threads, args.flops_per_cycle
    )


if __name__ == "__main__":
    main()
