"""Read the prepared test split the way the official ``TestDataset`` does.

Facts: docs/official-e2fgvi.md §2.1, §5.1.

Frames: the k-th name of the sorted zip listing, RGB, resized with PIL bicubic to the evaluation
size. Masks: PNG *k* of ``test_masks/<video>.zip`` (what the masks stage writes) or, where that zip
is absent, ``test_masks/<video>/<k:05d>.png`` (the official release's layout), resized with
nearest, nonzero = hole, then dilated.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from e2fgvi.data.frames import VideoZip, load_index
from e2fgvi.errors import UserError
from e2fgvi.eval.protocol import dilate_mask

# The official layout under the data root (docs/official-e2fgvi.md §2.1).
FRAMES_DIR, MASKS_DIR, INDEX_FILE = "JPEGImages", "test_masks", "test.json"
_RERUN = "rerun the masks stage (dvc repro masks)"


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
    for where, data in _mask_pngs(root, video, count):
        try:
            with Image.open(io.BytesIO(data)) as image:
                gray = np.asarray(image.resize(size, Image.NEAREST).convert("L"))
        except (OSError, ValueError, SyntaxError):  # PIL's errors for bad or truncated data
            raise UserError(
                f"{where}: not a readable PNG (corrupt or truncated); {_RERUN}"
            ) from None
        masks.append(dilate_mask(gray, dilation))
    return np.stack(masks)


def _mask_pngs(root: Path, video: str, count: int) -> list[tuple[str, bytes]]:
    """(where, PNG bytes) of masks 0 … count-1: from ``<video>.zip``, else the folder layout."""
    archive, folder = root / MASKS_DIR / f"{video}.zip", root / MASKS_DIR / video
    if not archive.exists() and folder.is_dir():
        return [_read_file(folder / f"{k:05d}.png") for k in range(count)]
    try:
        with zipfile.ZipFile(archive) as masks:
            return _read_members(archive, masks, count)
    except FileNotFoundError:
        raise UserError(f"{archive}: missing (no {folder} either); {_RERUN}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserError(f"{archive}: not a readable zip ({exc}); {_RERUN}") from None


def _read_members(archive: Path, masks: zipfile.ZipFile, count: int) -> list[tuple[str, bytes]]:
    """Members 00000.png … of an open mask zip, which must hold exactly ``count`` PNGs."""
    held = {n for n in masks.namelist() if n.lower().endswith(".png")}
    if len(held) != count:
        raise UserError(
            f"{archive}: holds {len(held)} masks but {INDEX_FILE} says {count}; {_RERUN}"
        )
    names = [f"{k:05d}.png" for k in range(count)]
    missing = [n for n in names if n not in held]
    if missing:
        raise UserError(f"{archive}: member {missing[0]} missing; {_RERUN}")
    return [(f"{archive}: member {n}", masks.read(n)) for n in names]


def _read_file(path: Path) -> tuple[str, bytes]:
    """(path, bytes) of one mask file of the folder layout."""
    try:
        return str(path), path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {_RERUN}") from None
    except OSError as exc:
        raise UserError(f"{path}: not readable ({exc.strerror}); {_RERUN}") from None
