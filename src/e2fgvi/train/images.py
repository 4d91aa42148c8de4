"""Sample strips for MLflow: masked input, output and ground truth of a training clip, labelled."""

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


ROW_LABELS = ("masked input", "output", "ground truth")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label_bands(height: int) -> list[np.ndarray]:
    """One dark band per row with its label burnt in (white text, readable at the row height)."""
    scale = min(1.0, max(0.35, height / 160))
    sizes = [cv2.getTextSize(text, _FONT, scale, 1)[0] for text in ROW_LABELS]
    width = max(w for w, _ in sizes) + 12
    bands = []
    for text, (_, text_h) in zip(ROW_LABELS, sizes, strict=True):
        band = np.full((height, width, 3), 24, np.uint8)
        baseline = (height + text_h) // 2
        cv2.putText(band, text, (6, baseline), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
        bands.append(band)
    return bands


def sample_strip(frames: Tensor, masks: Tensor, comp: Tensor) -> np.ndarray:
    """Labelled rows: masked input (holes grey), output, ground truth; one column per frame."""
    masked = frames * (1 - masks)
    rows = [np.concatenate(list(_to_uint8(x)), axis=1) for x in (masked, comp, frames)]
    bands = _label_bands(rows[0].shape[0])
    return np.concatenate(
        [np.concatenate([band, row], axis=1) for band, row in zip(bands, rows, strict=True)],
        axis=0,
    )


def write_strip(path: Path, frames: Tensor, masks: Tensor, comp: Tensor) -> Path:
    """Write the strip of the first clip of a batch as PNG (atomically)."""
    strip = sample_strip(frames[0], masks[0], comp[0])
    ok, png = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    write_bytes(path, png.tobytes())
    return path
