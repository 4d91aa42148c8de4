"""Read the prepared test split the way the official ``TestDataset`` does.

Facts: docs/official-e2fgvi.md §2.1, §5.1.

Frames: the k-th name of the sorted zip listing, RGB, resized with PIL bicubic to the evaluation
size. Masks: ``test_masks/<video>/<k:05d>.png`` resized with nearest, nonzero = hole, then dilated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from e2fgvi.data.frames import VideoZip, load_index
from e2fgvi.errors import UserError
from e2fgvi.eval.protocol import dilate_mask

# The official layout under the data root (docs/official-e2fgvi.md §2.1).
FRAMES_DIR, MASKS_DIR, INDEX_FILE = "JPEGImages", "test_masks", "test.json"


def read_index(root: Path) -> dict[str, int]:
    """test.json: video name -> frame count, in file order."""
    return load_index(root / INDEX_FILE)


def load_frames(root: Path, video: str, count: int, size: tuple[int, int]) -> np.ndarray:
    """(count, h, w, 3) uint8 frames of one video, resized to ``size`` = (w, h) with bicubic."""
    frames = VideoZip(root / FRAMES_DIR / f"{video}.zip")
    if len(frames) != count:
        raise UserError(
            f"{frames.path}: holds {len(frames)} frames but {INDEX_FILE} says {count}; "
            "rerun the prepare stage"
        )
    resized = [Image.fromarray(frames.read(k)).resize(size, Image.BICUBIC) for k in range(count)]
    return np.stack([np.asarray(image) for image in resized])


def load_masks(
    root: Path, video: str, count: int, size: tuple[int, int], dilation: int
) -> np.ndarray:
    """(count, h, w) uint8 {0, 1} dilated holes of one video at ``size`` = (w, h)."""
    masks = []
    for k in range(count):
        path = root / MASKS_DIR / video / f"{k:05d}.png"
        try:
            with Image.open(path) as image:
                gray = np.asarray(image.resize(size, Image.NEAREST).convert("L"))
        except FileNotFoundError as exc:
            raise UserError(f"{path}: missing; rerun the masks stage (dvc repro masks)") from exc
        except OSError as exc:
            raise UserError(f"{path}: not a readable image ({exc}); rerun the masks stage") from exc
        masks.append(dilate_mask(gray, dilation))
    return np.stack(masks)
