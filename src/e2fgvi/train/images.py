"""Sample strips for MLflow: masked input, composite and ground truth of one training clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from torch import Tensor

from e2fgvi.atomic import write_bytes


def _to_uint8(frames: Tensor) -> np.ndarray:
    """(t, 3, h, w) in [-1, 1] -> (t, h, w, 3) uint8 RGB."""
    images = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return images.permute(0, 2, 3, 1).cpu().numpy()


def sample_strip(frames: Tensor, masks: Tensor, comp: Tensor) -> np.ndarray:
    """Rows: masked input (holes grey), composite, ground truth; one column per frame."""
    masked = frames * (1 - masks)
    rows = [_to_uint8(x) for x in (masked, comp, frames)]
    return np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)


def write_strip(path: Path, frames: Tensor, masks: Tensor, comp: Tensor) -> Path:
    """Write the strip of the first clip of a batch as PNG (atomically)."""
    strip = sample_strip(frames[0], masks[0], comp[0])
    ok, png = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    write_bytes(path, png.tobytes())
    return path
