"""A PNG strip for eyeballing a result: input | mask | output | ground truth, one row per frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from e2fgvi.atomic import write_bytes
from e2fgvi.errors import UserError

COLUMNS = ("input", "mask", "output", "ground truth")
_HEADER = 24


def strip_indices(length: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over a ``length``-frame video (fewer if short)."""
    return sorted({round(float(i)) for i in np.linspace(0, length - 1, min(count, length))})


def _header(width: int) -> np.ndarray:
    band = np.full((_HEADER, width * len(COLUMNS), 3), 255, np.uint8)
    for k, label in enumerate(COLUMNS):
        cv2.putText(band, label, (k * width + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return band


def make_strip(
    frames: np.ndarray, masks: np.ndarray, outputs: np.ndarray, indices: list[int]
) -> np.ndarray:
    """(rows·h + header, 4·w, 3) uint8 RGB image; the input shows holes as the model sees them."""
    rows = []
    for i in indices:
        hole = masks[i].astype(bool)
        shown = frames[i].copy()
        shown[hole] = 127  # a zero in [-1, 1] space, i.e. mid-grey
        mask_rgb = np.repeat((hole * 255).astype(np.uint8)[..., None], 3, axis=2)
        rows.append(np.concatenate([shown, mask_rgb, outputs[i], frames[i]], axis=1))
    return np.concatenate([_header(frames.shape[2]), *rows], axis=0)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"{path}: could not encode the PNG")
    write_bytes(path, data.tobytes())
