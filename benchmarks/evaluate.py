"""Frames per second of the evaluation protocol: sliding windows, model, compositing.

Runs E2FGVI at the official 240x432 and E2FGVI-HQ at the sample profile's 120x216 on a synthetic
clip with random weights (speed does not depend on the weights), after one warm-up window. On a
CUDA device it also times the batched bfloat16 path (eval.window_batch > 1, eval.amp: bf16).

    PYTHONPATH=src python benchmarks/evaluate.py [--frames 12] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from e2fgvi.devices import pick_device
from e2fgvi.eval.generator import as_window_model
from e2fgvi.eval.protocol import complete_video
from e2fgvi.model import InpaintGenerator

CASES = (("e2fgvi", 432, 240), ("e2fgvi_hq", 216, 120))


def _clip(frames: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    masks = np.zeros((frames, h, w), np.uint8)
    masks[:, h // 3 : h // 2, w // 4 : w // 2] = 1
    return video, masks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_per_second(model, video, masks, device, window_batch=1, amp_dtype=None) -> float:
    """Warm up on the first window's shapes, then time the whole clip."""
    kwargs = dict(neighbor_stride=5, ref_length=10, device=device)
    for _ in complete_video(model, video[:6], masks[:6], **kwargs):
        pass
    _sync(device)
    start = time.perf_counter()
    for _ in complete_video(
        model, video, masks, window_batch=window_batch, amp_dtype=amp_dtype, **kwargs
    ):
        pass
    _sync(device)
    return len(video) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device, key="--device")
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {where}, torch threads {torch.get_num_threads()}, {args.frames} frames")
    for variant, w, h in CASES:
        generator = InpaintGenerator(variant).eval().to(device)
        model = as_window_model(generator, variant)
        video, masks = _clip(args.frames, w, h)
        fps = frames_per_second(model, video, masks, device)
        print(f"{variant:10s} {w}x{h} fp32, 1 window/call: {fps:7.3f} frames/s")
        if device.type == "cuda":
            fast = frames_per_second(model, video, masks, device, 4, torch.bfloat16)
            print(f"{variant:10s} {w}x{h} bf16, 4 windows/call: {fast:7.3f} frames/s")


if __name__ == "__main__":
    main()
