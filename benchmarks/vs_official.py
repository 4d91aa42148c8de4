"""Our E2FGVI against the official implementation, side by side on the same inputs.

    PYTHONPATH=src python benchmarks/vs_official.py --official /path/to/E2FGVI
    PYTHONPATH=src python benchmarks/vs_official.py --official ../E2FGVI --config hq \
        --parts step --repeats 5 --device cuda

``--official`` is a checkout of github.com/MCG-NKU/E2FGVI (nothing of it is copied here; its
mmcv imports are served by ``benchmarks/mmcv_shim``). Every figure comes from a fresh process
per side, run interleaved (ours, official, ours, official, ...), fp32, batch 1; the table shows
medians over the repeats. Both sides start from identical weights (ours, loaded strictly into
the official networks), and before any timing the generator outputs and the first iteration's
losses must agree (allclose), which shows both compute the same function.

Measures: the training iteration per phase (see ``phase_clock.py``) and its peak memory, the
generator forward alone (no_grad), one DataLoader worker's clips/s (1280x720 JPEG sources and
sources pre-resized to the clip size) and the training-mask generator.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from clip_data import read_clip, write_videos
from interleave import interleaved, load_avg, machine, median, print_table, run_worker
from phase_clock import PHASES
from switch_names import switch_settings

CONFIGS = {
    "e2fgvi": {"variant": "e2fgvi", "width": 432, "height": 240, "num_local": 5, "num_ref": 3},
    "hq": {"variant": "e2fgvi_hq", "width": 216, "height": 120, "num_local": 3, "num_ref": 2},
}
PARTS = ("step", "forward", "loader", "masks")
SIDES = ("ours", "official")
OUTPUT_RTOL, OUTPUT_ATOL, LOSS_RTOL = 1e-3, 1e-5, 1e-4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="E2FGVI checkout")
    parser.add_argument("--config", nargs="+", choices=list(CONFIGS), default=["e2fgvi"])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2, help="processes per side and measure")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per process")
    parser.add_argument("--iters", type=int, default=1, help="timed iterations per process")
    parser.add_argument("--loader-clips", type=int, default=12, help="timed clips per process")
    parser.add_argument("--mask-videos", type=int, default=10, help="timed mask videos")
    parser.add_argument("--video-frames", type=int, default=132, help="frames per loader video")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per process (0: default; 1 on a loaded shared machine)",
    )
    parser.add_argument(
        "--ours-switches",
        nargs="+",
        default=["fp32"],
        help="our side's speed switches for the step and forward timings (switch_names.py), "
        "e.g. 'sampled+bf16'; several run interleaved as separate sides; the official side "
        "and the same-function check stay fp32",
    )
    parser.add_argument(
        "--loader-switches",
        nargs="+",
        default=["fp32"],
        help="loader options of ours timed beside our default loader, e.g. 'reduced'",
    )
    parser.add_argument("--json", type=Path, help="also write every raw figure here")
    return parser.parse_args()


def base_spec(args: argparse.Namespace, config: str, **extra: Any) -> dict[str, Any]:
    spec = {
        **CONFIGS[config],
        "device": args.device,
        "official": str(args.official.resolve()),
        "warmup": args.warmup,
        "iters": args.iters,
        **extra,
    }
    if args.threads:
        spec["threads"] = args.threads
    return spec


def check_same_function(args: argparse.Namespace, config: str, work: Path) -> dict[str, Any]:
    """Both sides: same generator outputs and same first-iteration losses, else stop."""
    weights = work / f"{config}_weights.pt"
    run_worker(base_spec(args, config, side="ours", task="setup", weights=str(weights)))
    outs, losses = {}, {}
    for side in SIDES:
        tensors = work / f"{config}_{side}_check.pt"
        spec = base_spec(
            args, config, side=side, task="check", weights=str(weights), tensors=str(tensors)
        )
        losses[side] = run_worker(spec)["losses"]
        outs[side] = torch.load(tensors, weights_only=True)
    report = same_function(outs["ours"], outs["official"], losses["ours"], losses["official"])
    return report | {"losses": losses["ours"]}


def same_function(
    ours: dict[str, torch.Tensor],
    official: dict[str, torch.Tensor],
    our_losses: dict[str, float],
    official_losses: dict[str, float],
) -> dict[str, float]:
    """Max |difference| of each output; SystemExit where outputs or losses disagree."""
    report = {}
    for key, mine in ours.items():
        theirs = official[key]
        report[f"max|diff| {key}"] = float((mine - theirs).abs().max())
        if not torch.allclose(mine, theirs, rtol=OUTPUT_RTOL, atol=OUTPUT_ATOL):
            raise SystemExit(f"generator output {key} differs: {report}")
    for key, mine in our_losses.items():
        theirs = official_losses[key]
        if abs(mine - theirs) > LOSS_RTOL * max(abs(theirs), 1e-3):
            raise SystemExit(f"first-iteration {key} differs: {mine} vs {theirs}")
    return report


def ours_label(switches: str) -> str:
    return "ours" if switches == "fp32" else f"ours {switches}"


def timed(args, config, task, work, progress) -> dict[str, list[dict[str, Any]]]:
    """Every one of our switch sets and the official side, interleaved (ours first)."""
    weights = str(work / f"{config}_weights.pt")
    specs = {
        ours_label(name): base_spec(
            args,
            config,
            side="ours",
            task=task,
            weights=weights,
            switches=switch_settings(name, args.device),
        )
        for name in args.ours_switches
    }
    specs["official"] = base_spec(args, config, side="official", task=task, weights=weights)
    return interleaved(specs, args.repeats, progress)


def _ours_sides(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [side for side in runs if side != "official"]


def _with(label: str, side: str) -> str:
    return label if side == "ours" else f"{label}, {side}"


def step_rows(label: str, runs: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    """Per-phase medians (each process: median of its timed iterations), per our switch set."""
    rows = []
    sides = [*_ours_sides(runs), "official"]
    values = {
        phase: {
            s: median([median([it[phase] for it in r["phases"]]) for r in runs[s]]) for s in sides
        }
        for phase in (*PHASES, "total")
    }
    mem = {s: median([r["peak_mib"] for r in runs[s]]) for s in sides}
    for side in _ours_sides(runs):
        for phase, v in values.items():
            rows.append(ratio_row(_with(label, side), f"step {phase} (s)", v[side], v["official"]))
        what = "step peak memory (MiB)"
        rows.append(ratio_row(_with(label, side), what, mem[side], mem["official"], ".0f"))
    return rows


def forward_rows(label: str, runs: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    sides = [*_ours_sides(runs), "official"]
    times = {s: median([median(r["times"]) for r in runs[s]]) for s in sides}
    mem = {s: median([r["peak_mib"] for r in runs[s]]) for s in sides}
    rows = []
    for side in _ours_sides(runs):
        lab = _with(label, side)
        rows.append(ratio_row(lab, "forward no_grad (s)", times[side], times["official"]))
        what = "forward peak memory (MiB)"
        rows.append(ratio_row(lab, what, mem[side], mem["official"], ".0f"))
    return rows


def ratio_row(label: str, what: str, ours: float, official: float, fmt: str = ".3f") -> list[str]:
    """Costs (time, memory): ratio ours/official, speed-up official/ours."""
    return [
        label,
        what,
        f"{ours:{fmt}}",
        f"{official:{fmt}}",
        f"{ours / official:.2f}",
        f"{official / ours:.2f}x",
    ]


def loader_rows(args, work: Path, progress) -> list[list[str]]:
    """One worker's clips/s on 1280x720 JPEGs and on JPEGs pre-resized to the clip size."""
    from ours_api import sample_clip

    cfg = CONFIGS["e2fgvi"]
    frames = read_clip(sample_clip(), args.video_frames)
    sources = {
        f"{frames[0].shape[1]}x{frames[0].shape[0]} JPEG": (None, 90),
        f"pre-resized {cfg['width']}x{cfg['height']} JPEG": ((cfg["width"], cfg["height"]), 95),
    }
    loader_switches = [n for n in args.loader_switches if n != "fp32"]
    rows = []
    for i, (label, (size, quality)) in enumerate(sources.items()):
        root = write_videos(frames, work / "loader" / f"src{i}", 3, size, quality)
        spec = base_spec(
            args, "e2fgvi", task="loader", data_root=str(root), warmup=2, iters=args.loader_clips
        )
        specs = {side: {**spec, "side": side} for side in SIDES}
        for name in loader_switches:
            specs[ours_label(name)] = {
                **spec,
                "side": "ours",
                "switches": switch_settings(name, args.device),
            }
        runs = interleaved(specs, args.repeats, progress)
        rate = {s: median([r["clips_per_s"] for r in runs[s]]) for s in specs}
        for side in [s for s in specs if s != "official"]:
            row = ratio_row(
                _with("loader 5+3 @432x240", side),
                f"{label}: s/clip (1 worker)",
                1 / rate[side],
                1 / rate["official"],
            )
            rows.append([*row, f"{rate[side]:.2f} vs {rate['official']:.2f} clips/s"])
    return rows


def mask_rows(args, progress) -> list[list[str]]:
    specs = {
        side: base_spec(
            args,
            "e2fgvi",
            side=side,
            task="masks",
            length=args.video_frames,
            iters=args.mask_videos,
        )
        for side in SIDES
    }
    runs = interleaved(specs, args.repeats, progress)
    t = {s: median([r["s_per_video"] for r in runs[s]]) for s in SIDES}
    what = f"mask video, {args.video_frames} frames (s)"
    return [ratio_row("masks @432x240", what, t["ours"], t["official"], ".4f")]


def main() -> None:
    args = parse_args()
    info = machine()
    load_start = load_avg()
    print(f"machine: {info}")
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    threads = args.threads or torch.get_num_threads()
    print(
        f"official fp32, ours {', '.join(args.ours_switches)}; batch 1, device {args.device}, "
        f"torch threads {threads}, "
        f"{args.repeats} interleaved repeats per side, "
        f"{args.warmup} warm-up + {args.iters} timed iterations per process"
    )
    rows, raw, loads = (
        [],
        {
            "machine": info,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        },
        [],
    )

    def progress(line: str) -> None:
        loads.append(load_avg()[0])
        print(line, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for config in args.config:
            c = CONFIGS[config]
            label = f"{c['variant']} {c['width']}x{c['height']} {c['num_local']}+{c['num_ref']}"
            if {"step", "forward"} & set(args.parts):
                raw[f"{config}_check"] = check_same_function(args, config, work)
                diffs = {k: v for k, v in raw[f"{config}_check"].items() if k.startswith("max")}
                print(
                    f"{label}: same function: outputs allclose {diffs}, losses within "
                    f"{LOSS_RTOL:g} relative"
                )
            for part, make_rows in (("step", step_rows), ("forward", forward_rows)):
                if part in args.parts:
                    runs = timed(args, config, part, work, progress)
                    raw[f"{config}_{part}"] = runs
                    rows += make_rows(label, runs)
        if "loader" in args.parts:
            rows += loader_rows(args, work, progress)
        if "masks" in args.parts:
            rows += mask_rows(args, progress)
    end = load_avg()
    print(
        f"\nload average at end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}; 1-min load sampled "
        f"after each process: median {median(loads or [0]):.2f}, "
        f"max {max(loads or [0]):.2f}\n"
    )
    header = ["config", "measure", "ours", "official", "ours/official", "speed-up"]
    print_table([*header, "note"], [r + [""] * (len(header) + 1 - len(r)) for r in rows])
    if args.json:
        raw["loads"] = loads
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
