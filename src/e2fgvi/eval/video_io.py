"""Read a user's video and masks (mp4 or a frame folder); write the result (H.264 mp4 or PNGs)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from e2fgvi.atomic import atomic_dir, atomic_path
from e2fgvi.errors import UserError

log = logging.getLogger(__name__)

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


FRAME_NAME = re.compile(r"\d{5}\.png")  # what a folder result holds: 00000.png, 00001.png, …
MP4_SUFFIXES = {".mp4", ".m4v", ".mov"}


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_output(out: Path, inputs: dict[str, Path]) -> None:
    """Refuse an ``--out`` that would overwrite an input or cannot be written, before any work.

    ``inputs`` maps option names (``--video``) to their paths.
    """
    target = out.resolve()
    for option, path in inputs.items():
        source = path.resolve()
        if _contains(source, target):
            what = f"the input {option}" if source == target else f"inside the input {option} "
            raise UserError(
                f"--out {out} is {what}{'' if source == target else f'folder {path}'}: inpaint"
                " never overwrites its input; write the result somewhere else"
            )
        if _contains(target, source):
            raise UserError(
                f"--out {out} holds the input {option} {path}, which replacing it would delete;"
                " write the result somewhere else"
            )
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"--out {out}: {parent} is a file, not a folder; choose another path")
    if out.suffix.lower() in MP4_SUFFIXES:
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a new .mp4 file path or remove it")
    elif out.suffix:
        raise UserError(f"--out {out}: use an .mp4 file or a folder (no suffix) for PNG frames")
    elif out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder path for PNG frames or an .mp4 path")
    elif out.is_dir():
        others = sorted(p.name for p in out.iterdir() if not FRAME_NAME.fullmatch(p.name))
        if others:
            raise UserError(
                f"--out {out} holds {others[0]}, not a frame of an earlier result; give a new or"
                " empty folder (a result folder is replaced as a whole)"
            )


def _even(rgb: np.ndarray) -> np.ndarray:
    """Pad an odd height or width by repeating the last row/column (H.264 4:2:0 needs even)."""
    pad = ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0))
    return np.pad(rgb, pad, mode="edge") if any(p[1] for p in pad) else rgb


class _H264:
    """H.264 (yuv420p, +faststart) in an mp4 through PyAV: plays in every browser."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float):
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream(
            "libx264", rate=Fraction(fps).limit_denominator(1001)
        )
        self.stream.width, self.stream.height = size[0] + size[0] % 2, size[1] + size[1] % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "18"}  # visually lossless; 23 is x264's default

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(rgb)), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


@contextlib.contextmanager
def frame_sink(
    out: Path, size: tuple[int, int], fps: float
) -> Iterator[Callable[[np.ndarray], None]]:
    """A function writing RGB frames to ``out``: an H.264 mp4 or a folder of PNGs.

    Both appear whole or not at all: the mp4 is renamed into place, the folder replaces an
    earlier result as a whole (no stale frames of a longer video). Check ``out`` first with
    ``check_output``.
    """
    if out.suffix.lower() in MP4_SUFFIXES:
        if size[0] % 2 or size[1] % 2:
            log.warning("%s: H.264 needs an even size; %dx%d is padded by one pixel", out, *size)
        with atomic_path(out) as tmp:
            writer = _H264(tmp, size, fps)
            try:
                yield writer.write
            except BaseException:
                writer.container.close()  # the temporary file goes; nothing to flush
                raise
            writer.close()
        return
    with atomic_dir(out) as staging:
        count = itertools.count()

        def write(rgb: np.ndarray) -> None:
            ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise UserError(f"{out}: could not encode a PNG frame")
            (staging / f"{next(count):05d}.png").write_bytes(data.tobytes())

        yield write
