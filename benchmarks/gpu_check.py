"""The Python parts of benchmarks/gpu_check.sh; each prints its figures and writes --json.

energy: a matmul load for --seconds under the training loop's CostMeter; prints wall time,
        NVML energy from the counter and from integrated power samples, mean and max power.
        On a CPU it says GPU sampling is off and prints the CPU figures only.
ddp:    (under torchrun) real training steps of the plan's model configuration, DDP-wrapped
        as in training (NCCL on GPUs, gloo on CPUs); rank 0 prints each rank's step times and
        writes its losses and a weight checksum after the steps.
single: the same steps in one process: each DDP rank builds the same seeded clip, so the
        2-rank global batch is two copies of this one clip (same mean loss and gradient).
losses: the plan's step at fp32 and at bf16 from the same weights and batch: losses per step.
psnr:   the evaluation protocol on --device and on the CPU, same seeded model and clip:
        PSNR against the ground truth on each.

The judge (benchmarks/gpu_check_judge.py) compares the JSON files with stated bounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from e2fgvi.config import CostParams, load_params
from e2fgvi.devices import pick_device
from e2fgvi.measure.meter import CostMeter


def _fmt(value, unit: str = "") -> str:
    return "null" if value is None else f"{value:.4g}{unit}"


def _write(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def energy(seconds: float, device_name: str, out: str | None) -> None:
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
    power = gpu.stats.get("power_w")
    _write(
        out,
        {
            "device": gpu.name,
            "counter_j": gpu.energy_j,
            "integral_j": integral,
            "mean_power_w": gpu.mean_power_w,
            "max_power_w": power.max if power else None,
            "samples": gpu.samples,
        },
    )
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


def _run_steps(step, steps: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Step times (the first step is warm-up, not timed) and each step's generator loss."""
    times, losses = [], []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(result.values["loss/generator"]))
    return times[1:], losses


def _checksum(step) -> float:
    """Sum of |w| over the generator's weights (the step closure holds the networks)."""
    nets = next(c.cell_contents for c in step.__closure__ if hasattr(c.cell_contents, "generator"))
    return float(sum(p.detach().abs().sum() for p in nets.generator.parameters()))


def ddp(plan_file: str, steps: int, clips: int, device_name: str, out: str | None) -> None:
    import torch.distributed as dist

    from e2fgvi.train.distributed import close_world, init_world
    from e2fgvi.train.profiling import make_training_step

    world = init_world(device_name)
    params = load_params(plan_file)
    step = make_training_step(params, world.device, clips, world)
    times, losses = _run_steps(step, steps, world.device)
    gathered = [None] * world.size
    dist.all_gather_object(gathered, (world.rank, str(world.device), times))
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
        _write(out, {"ranks": world.size, "losses": losses, "checksum": _checksum(step)})
    close_world(world)


def single(plan_file: str, steps: int, clips: int, device_name: str, out: str | None) -> None:
    from e2fgvi.train.profiling import make_training_step

    device = pick_device(device_name, key="--device")
    step = make_training_step(load_params(plan_file), device, clips)
    times, losses = _run_steps(step, steps, device)
    print(f"single: 1 process on {device}: step median {statistics.median(times):.4g} s")
    _write(out, {"ranks": 1, "losses": losses, "checksum": _checksum(step)})


def losses(plan_file: str, steps: int, device_name: str, out: str | None) -> None:
    from e2fgvi.cost.plan import measured_params
    from e2fgvi.train.profiling import make_training_step

    device = pick_device(device_name, key="--device")
    plan = load_params(plan_file)
    found = {}
    for amp in ("fp32", "bf16"):
        step = make_training_step(measured_params(plan, amp), device, 1)
        found[amp] = _run_steps(step, steps - 1, device)[1]
        print(f"losses: {amp}: generator loss per step {[f'{v:.5g}' for v in found[amp]]}")
    _write(out, found)


def psnr(frames: int, device_name: str, out: str | None) -> None:
    from e2fgvi.eval import metrics
    from e2fgvi.eval.generator import as_window_model
    from e2fgvi.eval.protocol import complete_video
    from e2fgvi.model import InpaintGenerator

    device = pick_device(device_name, key="--device")
    rng = np.random.default_rng(0)
    h, w = 120, 216
    base = rng.integers(0, 256, (1, h, w, 3)).astype(np.float32)
    video = np.clip(base + rng.normal(0, 8, (frames, h, w, 3)), 0, 255).astype(np.uint8)
    masks = np.zeros((frames, h, w), np.uint8)
    masks[:, h // 3 : h // 2, w // 4 : w // 2] = 1
    found = {}
    for where in dict.fromkeys([device, torch.device("cpu")]):
        torch.manual_seed(0)
        model = as_window_model(InpaintGenerator("e2fgvi_hq").eval().to(where), "e2fgvi_hq")
        done = complete_video(model, video, masks, neighbor_stride=5, ref_length=10, device=where)
        comp = [c for _, c in done]
        found[where.type] = float(
            np.mean([metrics.psnr(g, c) for g, c in zip(video, comp, strict=True)])
        )
        print(f"psnr: {where}: mean frame PSNR {found[where.type]:.4f} dB ({frames} frames)")
    _write(out, found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    parts = {name: sub.add_parser(name) for name in ("energy", "ddp", "single", "losses", "psnr")}
    for name, part in parts.items():
        part.add_argument("--device", default="auto")
        part.add_argument("--json", help="also write the figures to this JSON file")
        if name in ("ddp", "single", "losses"):
            part.add_argument("--plan", default="params.official.yaml")
            part.add_argument("--steps", type=int, default=3)
    parts["energy"].add_argument("--seconds", type=float, default=20.0)
    parts["psnr"].add_argument("--frames", type=int, default=8)
    for name in ("ddp", "single"):
        parts[name].add_argument("--clips", type=int, default=1)
    args = parser.parse_args()
    if args.part == "energy":
        energy(args.seconds, args.device, args.json)
    elif args.part in ("ddp", "single"):
        (ddp if args.part == "ddp" else single)(
            args.plan, args.steps, args.clips, args.device, args.json
        )
    elif args.part == "losses":
        losses(args.plan, args.steps, args.device, args.json)
    else:
        psnr(args.frames, args.device, args.json)


if __name__ == "__main__":
    main()
