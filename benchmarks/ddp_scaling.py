"""DDP on CPU: a two-node job against one node, and what the gloo all-reduce of G+D costs.

1. The train stage as a user runs it (its own command, a fresh folder per job) on the embedded
   sample, shrunk as the tests shrink it (E2FGVI-HQ, 2 local + 1 reference frames, 60x108):
     one node,  global batch 2  (1 process, 2 clips a step)
     two nodes, global batch 2  (`train.nnodes: 2`, 1 process each, c10d on 127.0.0.1, gloo)
     one node,  global batch 1  (the two-node job's per-node batch)
   Step time: the cost record's median over the measured steps (warm-up excluded); rounds of the
   three jobs interleave, so load drifts hit all three alike. Every process gets
   ``--threads`` intra-op threads (default: this machine's cores / processes of the job).
2. The gradient all-reduce DDP does every step: one per parameter bucket (DDP's default sizes:
   1 MiB first, 25 MiB after, parameters in reverse order) over every trainable parameter of
   the E2FGVI-HQ generator and the discriminator, fp32, gloo, two processes on this machine;
   all buckets in flight at once and awaited, as DDP's reducer does without compute to overlap.
   Also one flat tensor of the same size. Warm-up 2, then ``--repeats``; median and p90 of the
   slower rank's time.

    PYTHONPATH=src .venv/bin/python benchmarks/ddp_scaling.py [--iterations 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import ROOT, write_params
from sample_data import prepared_sample

from e2fgvi.config import load_params
from e2fgvi.model import Discriminator, build_generator

SHRUNK = {
    "train__num_local_frames": 2,
    "train__num_ref_frames": 1,
    "train__log_every": 1,
    "train__image_every": 1000,
    "train__checkpoint_every": 1000,
    "cost__warmup_steps": 2,
    "tracking__experiment": "bench-ddp",
}
JOBS = {  # name: (nodes, global batch)
    "one node, batch 2": (1, 2),
    "two nodes, batch 2": (2, 2),
    "one node, batch 1": (1, 1),
}
FIRST_BUCKET_BYTES, BUCKET_BYTES = 1024**2, 25 * 1024**2  # DDP's defaults


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stage_command(data: Path) -> list[str]:
    return [sys.executable, "-m", "e2fgvi.stages.train", "--data", str(data),
            "--spynet", "spynet.pth", "--checkpoints", "run/checkpoints",
            "--generator", "run/generator.pth", "--cost-record", "run/cost_raw.json",
            "--run-record", "run/mlflow_run.json", "--params-used", "run/params_used.json",
            "--mlruns", "mlruns", "--metrics", "train.json", "--plots", "loss.csv"]  # fmt: skip


def run_job(folder: Path, data: Path, nodes: int, batch: int, iterations: int, threads: int):
    """One train-stage job; returns its cost record's totals."""
    write_params(folder, **SHRUNK, train__iterations=iterations, train__batch_size=batch,
                 train__nnodes=nodes, train__nproc_per_node=1)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PET_RDZV_ENDPOINT": f"127.0.0.1:{free_port()}", "PET_RDZV_ID": folder.name}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)
    with (folder / "stage.log").open("w") as log:
        processes = [
            subprocess.Popen(
                stage_command(data), cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            for _ in range(nodes)
        ]
        codes = [p.wait() for p in processes]
    if any(codes):
        sys.exit(f"{folder}: job failed {codes}; see {folder / 'stage.log'}")
    return json.loads((folder / "run" / "cost_raw.json").read_text())["totals"]


def stage_jobs(args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    params = load_params(ROOT / "params.yaml")
    prepared_sample(work, params, eval_masks=False)
    medians: dict[str, list[float]] = {name: [] for name in JOBS}
    for round_ in range(args.rounds):
        for name, (nodes, batch) in JOBS.items():
            threads = args.threads or max(1, (os.cpu_count() or 1) // nodes)
            folder = work / f"r{round_}-{nodes}n-b{batch}"
            totals = run_job(folder, work / "youtube-vos", nodes, batch, args.iterations, threads)
            medians[name].append(totals["step_s_median"])
            print(f"  round {round_ + 1} {name:<20} {totals['step_s_median']:.2f} s/step "
                  f"({totals['steps_measured']} measured, {threads} thread(s) a process, "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    return medians


def buckets(sizes: list[int]) -> list[int]:
    """Element counts of DDP's gradient buckets (reverse parameter order, default caps)."""
    found, current, cap = [], 0, FIRST_BUCKET_BYTES
    for numel in reversed(sizes):
        current += numel
        if current * 4 >= cap:
            found.append(current)
            current, cap = 0, BUCKET_BYTES
    return found + ([current] if current else [])


def _allreduce_worker(rank: int, port: int, sizes: list[int], repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    layouts = {"DDP buckets": buckets(sizes), "one flat tensor": [sum(sizes)]}
    times: dict[str, list[float]] = {}
    for label, layout in layouts.items():
        tensors = [torch.randn(n) for n in layout]
        times[label] = []
        for repeat in range(2 + repeats):
            dist.barrier()
            start = time.perf_counter()
            works = [dist.all_reduce(t, async_op=True) for t in tensors]
            for work in works:
                work.wait()
            elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slower rank's time
            if repeat >= 2:
                times[label].append(float(elapsed))
        times[label + " count"] = [float(len(layout))]
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def allreduce(repeats: int, work: Path) -> tuple[int, dict[str, list[float]]]:
    model = load_params(ROOT / "params.yaml").model
    nets = [build_generator(model, None), Discriminator()]
    sizes = [p.numel() for net in nets for p in net.parameters() if p.requires_grad]
    out = work / "allreduce.json"
    mp.spawn(_allreduce_worker, args=(free_port(), sizes, repeats, str(out)), nprocs=2)
    return sum(sizes), json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8, help="steps per job (2 warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the jobs")
    parser.add_argument("--repeats", type=int, default=10, help="timed all-reduces")
    parser.add_argument("--threads", type=int, default=0, help="0: cores / processes")
    parser.add_argument("--skip-jobs", action="store_true", help="only the all-reduce")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start, torch "
          f"{torch.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        count, times = allreduce(args.repeats, work)
        print(f"gloo all-reduce of G+D gradients: {count / 1e6:.1f} M params, "
              f"{count * 4 / 1e6:.0f} MB fp32, 2 processes on this machine")  # fmt: skip
        for label in ("DDP buckets", "one flat tensor"):
            t = times[label]
            p90 = statistics.quantiles(t, n=10)[-1]
            print(f"  {label:<16} ({int(times[label + ' count'][0])} tensor(s)): median "
                  f"{statistics.median(t) * 1e3:.0f} ms, p90 {p90 * 1e3:.0f} ms, "
                  f"{count * 4 / statistics.median(t) / 1e9:.2f} GB/s of gradient")  # fmt: skip
        if args.skip_jobs:
            return
        medians = stage_jobs(args, work)
    step = {name: statistics.median(values) for name, values in medians.items()}
    same_batch = step["one node, batch 2"] / step["two nodes, batch 2"]
    per_node = step["one node, batch 1"] / step["two nodes, batch 2"]
    print("train-stage jobs, median s/step over rounds: " + ", ".join(
        f"{name} {value:.2f}" for name, value in step.items()))  # fmt: skip
    print(f"  two nodes vs one, same global batch: {same_batch:.2f}x the speed (ideal 2)")
    print(f"  two nodes vs one, same per-node batch: {per_node:.2f} of one node's step rate "
          "with twice the clips (ideal 1)")  # fmt: skip
    print(f"  load at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
