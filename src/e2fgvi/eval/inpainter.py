"""A generator checkpoint as one call that inpaints a whole clip: what the MLflow model runs.

``load_inpainter(checkpoint)`` returns ``inpaint(frames, masks, ...) -> frames``: uint8 RGB
frames (t, h, w, 3) and masks (t, h, w, nonzero = hole) in, the completed uint8 frames out, with
the ``e2fgvi inpaint`` windows and compositing (pixels outside the dilated holes are kept).
This module knows nothing of MLflow; ``e2fgvi.tracking.models`` wraps it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from e2fgvi.devices import pick_device
from e2fgvi.errors import UserError
from e2fgvi.eval.generator import E2FGVI_SIZE, load_window_model
from e2fgvi.eval.inpaint import inpaint_frames

Inpainter = Callable[..., np.ndarray]


def check_clip(frames: np.ndarray, masks: np.ndarray) -> None:
    """Refuse arrays the model cannot run, in one line naming what is wrong."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserError(f"frames must be (t, h, w, 3) RGB, got shape {frames.shape}")
    if masks.shape != frames.shape[:3]:
        raise UserError(f"masks must be (t, h, w) = {frames.shape[:3]}, got {masks.shape}")
    if len(frames) < 2:
        raise UserError(f"{len(frames)} frame; E2FGVI needs at least 2 (it estimates flow)")


def load_inpainter(checkpoint: str | Path, device: str = "auto") -> Inpainter:
    """The checkpoint's generator (variant read from it) as an ``inpaint`` function."""
    torch_device = pick_device(device)
    model, variant = load_window_model(Path(checkpoint), None, torch_device)

    def inpaint(
        frames: np.ndarray,
        masks: np.ndarray,
        neighbor_stride: int = 5,
        ref_length: int = 10,
        dilation: int = 4,
    ) -> np.ndarray:
        frames, masks = np.asarray(frames, dtype=np.uint8), np.asarray(masks)
        check_clip(frames, masks)
        h, w = frames.shape[1:3]
        resize_to = E2FGVI_SIZE if variant == "e2fgvi" and (w, h) != E2FGVI_SIZE else None
        completed = inpaint_frames(
            model,
            frames,
            (masks > 0).astype(np.uint8),
            resize_to=resize_to,
            neighbor_stride=neighbor_stride,
            ref_length=ref_length,
            dilation=dilation,
            device=torch_device,
        )
        return np.stack(list(completed))

    return inpaint
