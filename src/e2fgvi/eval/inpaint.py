"""``e2fgvi inpaint``: fill the masked region of a video with a trained E2FGVI generator.

E2FGVI-HQ runs at the video's own size (mirror-padded to multiples of 60x108 inside the model
wrapper); E2FGVI runs at 432x240 and its completion is resized back and composited into the
original frames, so pixels outside the (dilated) mask are never changed. Windows follow the
official demo: neighbours ±stride, a reference frame every ``--ref-length`` frames.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from e2fgvi.devices import pick_device
from e2fgvi.errors import UserError
from e2fgvi.eval.generator import E2FGVI_SIZE, load_window_model
from e2fgvi.eval.protocol import WindowModel, complete_video, dilate_mask, window_schedule
from e2fgvi.eval.video_io import check_output, frame_sink, read_masks, read_video

log = logging.getLogger(__name__)


def _count(minimum: int):
    """An argparse type: an int >= ``minimum`` (0 strides would loop forever or crash later)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _device_name(text: str) -> str:
    """An argparse type: a name ``pick_device`` understands (a typo would silently mean CPU)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"use auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, required=True, help="mp4 file or folder of frames")
    parser.add_argument(
        "--masks", type=Path, required=True, help="folder of per-frame masks or one mask image"
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="generator weights")
    parser.add_argument(
        "--variant",
        choices=["e2fgvi", "e2fgvi_hq"],
        default=None,
        help="model variant (default: read from the checkpoint)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output .mp4 or folder of PNGs")
    parser.add_argument(
        "--neighbor-stride",
        type=_count(1),
        default=5,
        help="a window every N frames, with N neighbours each side",
    )
    parser.add_argument(
        "--ref-length", type=_count(1), default=10, help="a reference frame every N frames"
    )
    parser.add_argument("--dilation", type=_count(0), default=4, help="3x3-cross mask dilations")
    parser.add_argument(
        "--device", type=_device_name, default="auto", help="auto, cpu, cuda or cuda:N"
    )
    parser.add_argument("--fps", type=float, default=None, help="output fps (default: input's)")
    parser.add_argument("--window-batch", type=_count(1), default=1, help="windows per model call")
    parser.add_argument("--bf16", action="store_true", help="autocast windows to bfloat16 (GPU)")


def _resize(images: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(x).resize(size, resample)) for x in images])


def inpaint_frames(
    model: WindowModel,
    frames: np.ndarray,
    masks: np.ndarray,
    *,
    resize_to: tuple[int, int] | None,
    neighbor_stride: int,
    ref_length: int,
    dilation: int,
    device: torch.device,
    window_batch: int = 1,
    amp_dtype: torch.dtype | None = None,
    on_window: Callable[[], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the completed uint8 frames in order; ``resize_to`` = (w, h) the model must run at."""
    holes = np.stack([dilate_mask(m, dilation) for m in masks])
    work_frames, work_holes = frames, holes
    if resize_to is not None:
        work_frames = _resize(frames, resize_to, Image.BICUBIC)
        small = _resize(masks.astype(np.uint8) * 255, resize_to, Image.NEAREST)
        work_holes = np.stack([dilate_mask(m, dilation) for m in small])
    completed = complete_video(
        model,
        work_frames,
        work_holes,
        neighbor_stride=neighbor_stride,
        ref_length=ref_length,
        device=device,
        window_batch=window_batch,
        amp_dtype=amp_dtype,
        on_window=on_window,
    )
    size = (frames.shape[2], frames.shape[1])
    for idx, comp in completed:
        out = comp.astype(np.uint8)  # truncation, as the official demo writes its frames
        if resize_to is not None:
            back = np.asarray(Image.fromarray(out).resize(size, Image.BICUBIC))
            out = np.where(holes[idx][..., None].astype(bool), back, frames[idx])
        yield out


def run(args: argparse.Namespace) -> int:
    check_output(args.out, {"--video": args.video, "--masks": args.masks})
    device = pick_device(args.device, key="--device")
    frames, fps = read_video(args.video)
    t, h, w = frames.shape[:3]
    if t < 2:
        raise UserError(f"{args.video}: {t} frame; E2FGVI needs at least 2 (it estimates flow)")
    masks = read_masks(args.masks, t, (w, h))
    model, variant = load_window_model(args.checkpoint, args.variant, device)
    resize_to = E2FGVI_SIZE if variant == "e2fgvi" and (w, h) != E2FGVI_SIZE else None
    log.info(
        "%d frames %dx%d, variant %s%s", t, w, h, variant, " (run at 432x240)" * bool(resize_to)
    )
    windows = len(window_schedule(t, args.neighbor_stride, args.ref_length))
    with (
        frame_sink(args.out, (w, h), args.fps or fps or 24.0) as write,
        tqdm(total=windows, desc="inpaint", unit="window") as bar,
    ):
        for frame in inpaint_frames(
            model,
            frames,
            masks,
            resize_to=resize_to,
            neighbor_stride=args.neighbor_stride,
            ref_length=args.ref_length,
            dilation=args.dilation,
            device=device,
            window_batch=args.window_batch,
            amp_dtype=torch.bfloat16 if args.bf16 else None,
            on_window=bar.update,
        ):
            write(frame)
    log.info("wrote %d frames to %s", t, args.out)
    return 0
