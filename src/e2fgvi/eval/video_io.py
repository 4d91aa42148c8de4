"""Read a user's video and masks (mp4 or a folder of frames) and write the result (mp4 or PNGs)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from e2fgvi.errors import UserError
from e2fgvi.eval.strip import write_png

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no image files (png, jpg, …) in this folder")
    return files


def _open(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from exc


def _read_mp4(path: Path) -> tuple[np.ndarray, float | None]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"{path}: cannot be opened as a video (mp4/avi/…) or a folder of frames")
    frames = []
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or None
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise UserError(f"{path}: no frames could be decoded")
    return np.stack(frames), fps


def read_video(path: Path) -> tuple[np.ndarray, float | None]:
    """(t, h, w, 3) uint8 RGB frames and the frame rate (None for a folder of frames)."""
    if not path.exists():
        raise UserError(f"{path}: no such video file or frame folder")
    if not path.is_dir():
        return _read_mp4(path)
    files = _image_files(path)
    first = _open(files[0], "RGB")
    frames = [first]
    for file in files[1:]:
        frame = _open(file, "RGB")
        if frame.shape != first.shape:
            raise UserError(f"{file}: {_size(frame)} but {files[0].name} is {_size(first)}")
        frames.append(frame)
    return np.stack(frames), None


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def read_masks(path: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """(count, h, w) uint8 {0, 1} holes (nonzero = hole) from a folder or one image for all."""
    if not path.exists():
        raise UserError(f"{path}: no such mask image or mask folder")
    files = _image_files(path) if path.is_dir() else [path]
    if path.is_dir() and len(files) != count:
        raise UserError(f"{path}: {len(files)} masks for {count} frames; give one mask per frame")
    width, height = size
    masks = []
    for file in files:
        mask = _open(file, "L")
        if mask.shape != (height, width):
            raise UserError(f"{file}: mask is {_size(mask)} but the frames are {width}x{height}")
        masks.append((mask > 0).astype(np.uint8))
    if len(masks) == 1:
        return np.broadcast_to(masks[0], (count, height, width))
    return np.stack(masks)


class FrameSink:
    """Writes RGB frames to an mp4 (mp4v, renamed into place at close) or a folder of PNGs."""

    def __init__(self, out: Path, size: tuple[int, int], fps: float):
        self.out, self.count = out, 0
        self._writer, self._tmp = None, None
        if out.suffix.lower() in {".mp4", ".m4v", ".mov"}:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent)
            os.close(fd)
            self._tmp = Path(tmp)
            self._writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            if not self._writer.isOpened():
                self.abort()
                raise UserError(f"{out}: cannot write an mp4 here; use a folder path for PNGs")
        elif out.suffix:
            raise UserError(f"{out}: use an .mp4 file or a folder (no suffix) for PNG frames")
        else:
            out.mkdir(parents=True, exist_ok=True)

    def write(self, rgb: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        else:
            write_png(self.out / f"{self.count:05d}.png", rgb)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            os.replace(self._tmp, self.out)
            self._writer = None

    def abort(self) -> None:
        """Drop a half-written mp4; an existing OUT stays as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
