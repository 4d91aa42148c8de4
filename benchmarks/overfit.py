"""Can the trainer learn? Overfit ONE clip (fixed frames and masks) and score that same clip.

The standard proof that a training loop works: the real ``train_step`` (generator forward,
discriminator update, generator update; the profile's losses, optimizers and learning rate)
runs again and again on one clip of a sample test video with its fixed evaluation masks. By
default the clip is frames 10, 20 (local) and 40 (reference) of the second test video, whose
masks move, so the nearest-frame fill is a strong reference there. Every EVERY iterations the
generator (eval mode, no gradients) completes the clip; the composite (prediction inside the
holes, ground truth outside) is scored against the ground truth in 0-255 pixels:

* ``psnr``: frame-weighted whole-frame PSNR, as the evaluation protocol computes it;
* ``hole_psnr`` / ``hole_mae``: PSNR and mean absolute error over the hole pixels only (the
  only pixels a fill changes, so the sharper view of the same thing).

The reference is the nearest-frame fill (``e2fgvi.eval.baseline``) of the same clip and masks.
A working trainer drives the clip's error below the fill's, since it may memorise the clip. The
benchmark prints the curve and the first iteration where the composite beats the fill on hole
PSNR, and exits 1 unless that happens by ``--within``. OUT/overfit.json and OUT/overfit.png
are rewritten after every scored row (``complete: false`` until the end).

    PYTHONPATH=src .venv/bin/python benchmarks/overfit.py [--iterations 300] [--every 10] \
        [--within 300] [--lr 1e-4] [--frames 10,20,40 --local 2] [--out benchmarks/results/overfit]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from sample_data import prepared_sample

from e2fgvi.config import Params, parse_params
from e2fgvi.eval import metrics
from e2fgvi.eval.baseline import nearest_frame_fill
from e2fgvi.eval.testset import load_frames, load_masks, read_index
from e2fgvi.logs import setup_logging
from e2fgvi.train import nets as netlib
from e2fgvi.train.distributed import World
from e2fgvi.train.steps import Clips, generator_forward, train_step

log = logging.getLogger("overfit")


@dataclass(frozen=True)
class Clip:
    """One fixed training clip: uint8 (t, h, w, 3) frames, (t, h, w) {0, 1} holes."""

    frames: np.ndarray
    masks: np.ndarray
    num_local: int

    def tensors(self) -> Clips:
        """The clip as the training step takes it: a batch of one, frames in [-1, 1]."""
        frames = torch.from_numpy(self.frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        masks = torch.from_numpy((self.masks > 0).astype(np.float32))[:, None]
        return Clips(frames[None], masks[None], self.num_local)


def score(gt: np.ndarray, comp: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Whole-frame PSNR (frame mean), and PSNR / mean absolute error over the hole pixels."""
    gt64, comp64 = gt.astype(np.float64), comp.astype(np.float64)
    hole = masks > 0
    err = np.abs(gt64 - comp64)[hole]  # (n_hole_pixels, 3)
    mse = float(np.mean(err**2)) if err.size else 0.0
    return {
        "psnr": float(np.mean([metrics.psnr(g, c) for g, c in zip(gt, comp, strict=True)])),
        "hole_psnr": 20.0 * math.log10(255.0 / math.sqrt(mse)) if mse > 0 else math.inf,
        "hole_mae": float(np.mean(err)) if err.size else 0.0,
    }


@torch.no_grad()
def complete(generator: torch.nn.Module, clip: Clip) -> np.ndarray:
    """The generator's composite of ``clip`` as float (t, h, w, 3) pixels in [0, 255]."""
    was_training = generator.training
    generator.eval()
    try:
        out = generator_forward(generator, clip.tensors(), contextlib.nullcontext)
    finally:
        generator.train(was_training)
    pixels = ((out.comp[0] + 1.0) * 127.5).clamp(0.0, 255.0)
    return pixels.permute(0, 2, 3, 1).numpy()


def fill_score(clip: Clip) -> dict[str, float]:
    """The nearest-frame fill of the clip (frames in clip order), scored like the generator."""
    return score(clip.frames, nearest_frame_fill(clip.frames, clip.masks), clip.masks)


def overfit(
    params: Params, clip: Clip, iterations: int, every: int, on_row=lambda rows: None
) -> list[dict]:
    """Train ``iterations`` steps on ``clip``; a row of losses and scores every ``every``.

    ``on_row(rows)`` sees the curve so far after each row (a cut-short run keeps its curve).
    """
    world = World(rank=0, local_rank=0, size=1, device=torch.device("cpu"))
    nets = netlib.build_nets(params, None, world)
    clips = clip.tensors()
    rows = [{"iteration": 0, "seconds": 0.0, **_losses({}), **score_generator(nets, clip)}]
    log.info("iteration 0: %s", rows[0])
    seconds, pending = 0.0, []
    for step in range(1, iterations + 1):
        start = time.perf_counter()
        result = train_step(nets, clips, params, world)
        seconds += time.perf_counter() - start
        pending.append({k: float(v) for k, v in result.values.items()})
        if step % every == 0 or step == iterations:
            row = {"iteration": step, "seconds": seconds, **_losses(_mean(pending))}
            rows.append(row | score_generator(nets, clip))
            pending = []
            log.info("iteration %d: %s", step, rows[-1])
            on_row(rows)
    return rows


def score_generator(nets: netlib.Nets, clip: Clip) -> dict[str, float]:
    return score(clip.frames, complete(nets.generator, clip), clip.masks)


def _mean(values: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([v[k] for v in values])) for k in values[0]}


def _losses(means: dict[str, float]) -> dict[str, float]:
    """The generator's loss and its hole term (means since the last row; NaN at iteration 0)."""
    keys = {
        "loss_generator": "loss/generator",
        "loss_hole": "loss/hole",
        "loss_valid": "loss/valid",
    }
    return {name: means.get(key, math.nan) for name, key in keys.items()}


def first_past(rows: list[dict], fill: dict[str, float], key: str = "hole_psnr") -> int | None:
    """The first scored iteration whose composite beats the fill on ``key`` (None: never)."""
    return next((r["iteration"] for r in rows if r[key] > fill[key]), None)


def sample_clip(root: Path, params: Params, video: int, frame_ids: list[int]) -> Clip:
    """Frames ``frame_ids`` of test video ``video`` at the training size, with its fixed masks."""
    index = read_index(root)
    name = list(index)[video]
    size = (params.train.width, params.train.height)
    frames = load_frames(root, name, index[name], size)
    masks = load_masks(root, name, index[name], size, params.eval.mask_dilation)
    if max(frame_ids) >= len(frames):
        raise SystemExit(f"--frames: test video {name} has only {len(frames)} frames")
    return Clip(frames[frame_ids], masks[frame_ids], params.train.num_local_frames)


def load_params(path: Path, lr: float | None, local: int | None, frames: int) -> Params:
    """The profile with the learning rate and the clip's split (when given) changed."""
    raw = yaml.safe_load(path.read_text())
    if lr is not None:
        raw["train"]["lr"] = lr
    if local is not None:
        raw["train"].update(num_local_frames=local, num_ref_frames=frames - local)
    return parse_params(raw, str(path))


def run_benchmark(args: argparse.Namespace) -> dict:
    frame_ids = [int(k) for k in args.frames.split(",")]
    params = load_params(args.params, args.lr, args.local, len(frame_ids))
    if len(frame_ids) != params.train.num_local_frames + params.train.num_ref_frames:
        raise SystemExit("--frames: give num_local_frames + num_ref_frames indices (or --local)")
    root = prepared_sample(args.work.resolve(), params)
    clip = sample_clip(root, params, args.video, frame_ids)
    fill = fill_score(clip)
    log.info("nearest-frame fill of the clip: %s", fill)
    conditions = {
        "profile": str(args.params),
        "variant": params.model.variant,
        "clip": f"test video {args.video} (0-based), frames {frame_ids} "
        f"({params.train.num_local_frames} local), fixed evaluation masks",
        "size": f"{params.train.width}x{params.train.height}",
        "hole_fraction": float(np.mean(clip.masks > 0)),
        "lr": params.train.lr,
        "loss": params.loss.model_dump(),
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "iterations": args.iterations,
        "within": args.within,
    }

    def record(rows: list[dict], complete: bool = False) -> dict:
        done = {"iterations_done": rows[-1]["iteration"], "complete": complete}
        result = {
            "conditions": conditions | done | {"load_average": os.getloadavg()},
            "nearest_fill": fill,
            "first_past_fill": {k: first_past(rows, fill, k) for k in ("hole_psnr", "psnr")},
            "curve": rows,
        }
        write(result, args.out)
        return result

    rows = overfit(params, clip, args.iterations, args.every, record)
    return record(rows, complete=True)


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write(result: dict, out: Path) -> None:
    """overfit.json and overfit.png under ``out`` (rewritten after every row)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "overfit.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "overfit.png")


def plot(result: dict, path: Path) -> None:
    """Loss (left) and hole PSNR (right) against iterations, with the fill's hole PSNR."""
    from matplotlib.figure import Figure

    rows, fill = result["curve"], result["nearest_fill"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    trained = rows[1:]
    left.plot([r["iteration"] for r in trained], [r["loss_hole"] for r in trained], "o-",
              label="hole L1 (weighted)")  # fmt: skip
    left.plot([r["iteration"] for r in trained], [r["loss_generator"] for r in trained], "s-",
              label="generator total")  # fmt: skip
    left.set_yscale("log")
    left.set_xlabel("iteration")
    left.set_ylabel("loss (mean since previous point)")
    for key, style, colour in (("hole_psnr", "o-", "tab:blue"), ("psnr", "s-", "tab:orange")):
        name = "hole PSNR" if key == "hole_psnr" else "whole-frame PSNR"
        right.plot([r["iteration"] for r in rows], [r[key] for r in rows], style, color=colour,
                   label=f"composite, {name}")  # fmt: skip
        right.axhline(fill[key], ls="--", color=colour, label=f"nearest-frame fill, {name}")
    right.set_xlabel("iteration")
    right.set_ylabel("PSNR on the clip (dB)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    c = result["conditions"]
    fig.suptitle(f"Overfitting one clip: {c['variant']} {c['size']}, lr {c['lr']:g}, "
                 f"{c['torch_threads']} CPU threads")  # fmt: skip
    fig.savefig(path, dpi=110)


def table(result: dict) -> str:
    fill = result["nearest_fill"]
    head = ("iteration", "seconds", "loss", "hole L1", "PSNR", "hole PSNR", "hole MAE")
    lines = ["{:>9} {:>8} {:>8} {:>8} {:>7} {:>9} {:>8}".format(*head)]
    form = "{:>9} {:>8.0f} {:>8.4f} {:>8.4f} {:>7.2f} {:>9.2f} {:>8.2f}"
    keys = ("iteration", "seconds", "loss_generator", "loss_hole", "psnr", "hole_psnr", "hole_mae")
    for r in result["curve"]:
        lines.append(form.format(*(r[k] for k in keys)))
    lines.append("{:>9} {:>8} {:>8} {:>8} {:>7.2f} {:>9.2f} {:>8.2f}".format(
        "fill", "-", "-", "-", fill["psnr"], fill["hole_psnr"], fill["hole_mae"]))  # fmt: skip
    past = result["first_past_fill"]["hole_psnr"]
    lines.append(
        f"composite beats the nearest-frame fill on hole PSNR from iteration {past}"
        if past is not None
        else f"composite did NOT beat the nearest-frame fill in {result['curve'][-1]['iteration']}"
        " iterations"
    )
    c = result["conditions"]
    load = ", ".join(f"{x:.1f}" for x in c["load_average"])
    lines.append(f"CPU {c['cpu']}, {c['torch_threads']} torch threads, load average {load}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--lr", type=float, help="generator/discriminator lr (default: profile)")
    parser.add_argument("--video", type=int, default=1, help="which test video (0-based index)")
    parser.add_argument(
        "--local", type=int, default=2, help="how many of --frames are local frames"
    )
    parser.add_argument("--frames", default="10,20,40", help="clip frames: local, then refs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/e2fgvi-overfit"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overfit"))
    parser.add_argument(
        "--within", type=int, default=300, help="fail unless the fill is beaten by then"
    )
    args = parser.parse_args()
    setup_logging()
    result = run_benchmark(args)
    print(table(result))
    past = result["first_past_fill"]["hole_psnr"]
    raise SystemExit(0 if past is not None and past <= args.within else 1)


if __name__ == "__main__":
    main()
