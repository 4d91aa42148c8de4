"""The Python parts of benchmarks/gpu_check.sh: NVML energy against wall time, a 2-rank DDP step.

energy: a matmul load for --seconds under the training loop's CostMeter; prints wall time,
        NVML energy from the counter and from integrated power samples, mean power. On a
        CPU it says GPU sampling is off and prints the CPU figures only.
ddp:    (under torchrun) real training steps of the plan's model configuration, DDP-wrapped
        as in training (NCCL on GPUs, gloo on CPUs); rank 0 prints each rank's step times.

PYTHONPATH=src python benchmarks/gpu_check.py energy [--seconds 20] [--device auto]
PYTHONPATH=src torchrun --standalone --nproc-per-node 2 benchmarks/gpu_check.py ddp --plan P
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from e2fgvi.config import CostParams, load_params
from e2fgvi.devices import pick_device
from e2fgvi.measure.meter import CostMeter


def _fmt(value, unit: str = "") -> str:
    return "null" if value is None else f"{value:.4g}{unit}"


def energy(seconds: float, device_name: str) -> None:
    device = pick_device(device_name, key="--device")
    size = 8192 if device.type == "cuda" else 512
    a = torch.randn(size, size, device=device)
    meter = CostMeter(CostParams(warmup_steps=2, nvml_interval_s=0.1), device, clips_per_step=1)
    meter.start()
    end, step = time.perf_counter() + seconds, 0
    while time.perf_counter() < end or step < 3:
        with meter.compute():
            for _ in range(4):
                a = torch.tanh(a @ a / size)
        meter.end_step(step)
        step += 1
    record = meter.stop()
    gpu = record.gpu
    print(
        f"energy: device {record.device_name}, {step} steps of 4 matmuls {size}x{size}, "
        f"wall {record.wall_s:.2f} s, step median {_fmt(record.step_s.median, ' s')}"
    )
    if gpu is None:
        print(
            f"energy: GPU sampling off ({record.gpu_note}); CPU time "
            f"{record.cpu.time_s:.1f} s, CPU energy {_fmt(record.cpu.energy_j, ' J')} "
            f"({record.cpu.energy_note})"
        )
        return
    integral = gpu.energy_power_integral_j
    print(
        f"energy: NVML {gpu.name}: source {gpu.energy_source}, counter "
        f"{_fmt(gpu.energy_j, ' J')}, power integral {_fmt(integral, ' J')}, sampled "
        f"{gpu.duration_s:.2f} s in {gpu.samples} samples, mean power "
        f"{_fmt(gpu.mean_power_w, ' W')}"
    )
    if gpu.energy_j is not None and record.wall_s:
        ratio = gpu.energy_j / integral if integral else None
        print(
            f"energy: counter / wall time = {gpu.energy_j / record.wall_s:.1f} W; counter / "
            f"power integral = {_fmt(ratio)}; wraps {gpu.counter_wraps}, resets "
            f"{gpu.counter_resets}, unsupported {gpu.unsupported or '-'}"
        )
    for key, stats in sorted(gpu.stats.items()):
        print(f"energy: {key}: mean {_fmt(stats.mean)}, max {_fmt(stats.max)}")


def ddp(plan_file: str, steps: int, clips: int, device_name: str) -> None:
    import torch.distributed as dist

    from e2fgvi.train.distributed import close_world, init_world
    from e2fgvi.train.profiling import make_training_step

    world = init_world(device_name)
    params = load_params(plan_file)
    step = make_training_step(params, world.device, clips, world)
    times = []
    for _ in range(steps + 1):  # the first step is warm-up
        if world.device.type == "cuda":
            torch.cuda.synchronize(world.device)
        t0 = time.perf_counter()
        step()
        if world.device.type == "cuda":
            torch.cuda.synchronize(world.device)
        times.append(time.perf_counter() - t0)
    gathered = [None] * world.size
    dist.all_gather_object(gathered, (world.rank, str(world.device), times[1:]))
    if world.is_main:
        t = params.train
        print(
            f"ddp: {world.size} ranks, backend {dist.get_backend()}, {params.model.variant} "
            f"{t.width}x{t.height} {t.num_local_frames}+{t.num_ref_frames}, {clips} clip(s) "
            f"per rank, {t.amp}, {steps} steps after 1 warm-up"
        )
        for rank, device, measured in gathered:
            print(
                f"ddp: rank {rank} on {device}: step median {statistics.median(measured):.4g} "
                f"s, min {min(measured):.4g} s, max {max(measured):.4g} s"
            )
    close_world(world)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    part = sub.add_parser("energy")
    part.add_argument("--seconds", type=float, default=20.0)
    part.add_argument("--device", default="auto")
    part = sub.add_parser("ddp")
    part.add_argument("--plan", default="params.official.yaml")
    part.add_argument("--steps", type=int, default=5)
    part.add_argument("--clips", type=int, default=1)
    part.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.part == "energy":
        energy(args.seconds, args.device)
    else:
        ddp(args.plan, args.steps, args.clips, args.device)


if __name__ == "__main__":
    main()
