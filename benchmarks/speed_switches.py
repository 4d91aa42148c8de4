"""What each training speed switch gives: step time vs fp32 eager, and the loss deviation.

    PYTHONPATH=src python benchmarks/speed_switches.py
    PYTHONPATH=src python benchmarks/speed_switches.py --switches fp32 bf16 bf16+channels_last \
        --config e2fgvi --repeats 3 --steps 4 --device cuda

Our real ``train_step`` (batch 1) at the official configuration (``--config e2fgvi``: 432x240,
5+3 frames) or, by default so that a CPU run takes minutes, E2FGVI-HQ at 216x120 with 3+2;
one fresh process per switch and repeat, interleaved. Each process starts from the same weights
and trains ``--steps`` iterations on the same clip (the first is warm-up and, for compile, the
compilation); the losses of every step are compared with fp32 eager's.

Switches (combine with "+"): see ``switch_names.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from interleave import interleaved, load_avg, machine, median, print_table, run_worker
from switch_names import SWITCHES, switch_settings
from torchvision.ops import deform_conv2d
from vs_official import CONFIGS

TERMS = ("loss/generator", "loss/hole", "loss/valid", "loss/flow", "loss/discriminator")
DEFAULT = ("fp32", "bf16", "channels_last", "fused", "compile", "sampled", "sampled+bf16")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--switches",
        nargs="+",
        default=list(DEFAULT),
        help=f"from {', '.join(SWITCHES)}; combine with '+'",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per process (0: default; 1 on a loaded shared machine)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="processes per switch")
    parser.add_argument("--steps", type=int, default=3, help="iterations per process")
    parser.add_argument("--warmup", type=int, default=1, help="of --steps, untimed")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="run fp32 before and after every switch; speed-up against the mean "
        "of those two (for a machine whose load drifts)",
    )
    parser.add_argument(
        "--config",
        choices=list(CONFIGS),
        default="hq",
        help="e2fgvi: the official 432x240 5+3 (slow on a CPU); hq: 216x120 3+2",
    )
    return parser.parse_args()


def deviation(losses: list[dict[str, float]], reference: list[dict[str, float]]) -> float:
    """Largest relative difference over the steps and the loss terms."""
    return max(
        abs(a[k] - b[k]) / max(abs(b[k]), 1e-6)
        for a, b in zip(losses, reference, strict=True)
        for k in TERMS
    )


def print_dcn_autocast_facts() -> None:
    """What CPU autocast does with torchvision's deform_conv2d (no CPU bf16 kernel)."""
    x, w = torch.randn(1, 8, 6, 6), torch.randn(4, 8, 3, 3)
    offset, mask = torch.randn(1, 18, 6, 6), torch.rand(1, 9, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_conv2d(x, offset, w, padding=(1, 1), mask=mask)
        print(f"deform_conv2d under CPU bf16 autocast, fp32 inputs -> {out.dtype} (not cast)")
        try:
            deform_conv2d(
                x.bfloat16(), offset.bfloat16(), w.bfloat16(), padding=(1, 1), mask=mask.bfloat16()
            )
            print("deform_conv2d with bf16 inputs: runs")
        except RuntimeError as exc:
            print(
                f"deform_conv2d with bf16 inputs: RuntimeError ({str(exc).split(',')[-1].strip()})"
            )
    dump = torch._C._dispatch_dump("torchvision::deform_conv2d").splitlines()
    keys = [line.split(":")[0] for line in dump if line[:1].isupper() and "registered" in line]
    cpu_autocast = "yes" if "AutocastCPU" in keys else "no"
    print(f"deform_conv2d kernels: {', '.join(keys)}; CPU autocast rule: {cpu_autocast}")


def step_time(run: dict[str, Any]) -> float:
    """A process's step time: the median of its timed iterations."""
    return median([p["total"] for p in run["phases"]])


def paired_runs(specs: dict[str, dict[str, Any]], repeats: int, progress) -> tuple[dict, dict]:
    """fp32, then each switch followed by fp32 again: every switch sits between two fp32 runs.

    Returns the runs per switch and, per switch, (fp32 before, own, fp32 after) run indices.
    """
    names = list(specs)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    pairs: dict[str, list[tuple[int, int, int]]] = {n: [] for n in names[1:]}

    def go(name: str) -> None:
        start = time.perf_counter()
        try:
            runs[name].append(run_worker(specs[name]))
        except RuntimeError as exc:
            runs[name].append({"error": str(exc).strip().splitlines()[-1]})
        progress(
            f"  {name:28s} {time.perf_counter() - start:6.1f} s wall, load {load_avg()[0]:.2f}"
        )

    go(names[0])
    for _ in range(repeats):
        for name in names[1:]:
            go(name)
            go(names[0])
            pairs[name].append(
                (len(runs[names[0]]) - 2, len(runs[name]) - 1, len(runs[names[0]]) - 1)
            )
    return runs, pairs


def main() -> None:
    args = parse_args()
    config = CONFIGS[args.config] | {"device": args.device}
    if args.threads:
        config["threads"] = args.threads
    print(f"machine: {machine()}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in load_avg())}")
    print_dcn_autocast_facts()
    loads: list[float] = []

    def progress(line: str) -> None:
        loads.append(load_avg()[0])
        print(line, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "weights.pt")
        run_worker({**config, "side": "ours", "task": "setup", "weights": weights})
        names = ["fp32", *(s for s in args.switches if s != "fp32")]
        specs = {
            name: {
                **config,
                "side": "ours",
                "task": "step",
                "weights": weights,
                "warmup": args.warmup,
                "iters": args.steps - args.warmup,
                "switches": switch_settings(name, args.device),
            }
            for name in names
        }
        if args.paired:
            runs, pairs = paired_runs(specs, args.repeats, progress)
        else:
            runs, pairs = interleaved(specs, args.repeats, progress, keep_going=True), None
    base = median([step_time(r) for r in runs["fp32"]])
    reference = runs["fp32"][0]["losses"]
    rows = []
    for name in names:
        done = [r for r in runs[name] if "error" not in r]
        if not done:
            rows.append([name, "fails", "-", "-", "-", "-", runs[name][0]["error"][:80]])
            continue
        step = median([step_time(r) for r in done])
        speedup = base / step
        if pairs is not None and name != "fp32":
            ratios = [
                (step_time(runs["fp32"][a]) + step_time(runs["fp32"][c]))
                / 2
                / step_time(runs[name][b])
                for a, b, c in pairs[name]
                if "error" not in runs[name][b]
            ]
            speedup = median(ratios)
        first = median([r["warmup_s"][0] for r in done]) if args.warmup else float("nan")
        dev = max(deviation(r["losses"], reference) for r in done)
        mem = median([r["peak_mib"] for r in done])
        note = f"{len(runs[name]) - len(done)} run(s) failed" if len(done) < len(runs[name]) else ""
        rows.append(
            [
                name,
                f"{step:.2f}",
                f"{speedup:.2f}x",
                f"{first:.1f}",
                f"{dev:.1e}",
                f"{mem:.0f}",
                note,
            ]
        )
    print(
        f"\nload average at end: {' '.join(f'{v:.2f}' for v in load_avg())}; 1-min load "
        f"sampled after each process: median {median(loads):.2f}, max {max(loads):.2f}"
    )
    print(
        f"{config['variant']} {config['width']}x{config['height']}, "
        f"{config['num_local']}+{config['num_ref']} frames, batch 1, {args.device}, "
        f"torch threads {args.threads or torch.get_num_threads()}; {args.repeats} "
        f"interleaved process(es) per switch, {args.steps} steps each ({args.warmup} warm-up); "
        f"loss deviation: max relative difference to fp32 over all steps and {', '.join(TERMS)}"
        + (
            "; speed-up: median over repeats of (mean of the fp32 runs just before and after) / "
            "switch"
            if args.paired
            else "; speed-up: median fp32 step / median switch step"
        )
        + "\n"
    )
    header = ["switch", "step (s)", "speed-up", "first step (s)", "loss dev.", "peak MiB", "note"]
    print_table(header, rows)


if __name__ == "__main__":
    main()
