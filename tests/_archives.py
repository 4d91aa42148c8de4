"""Small synthetic YouTube-VOS-shaped archives for the data tests (no clip decoding, fast)."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np


def jpeg(value: int, width: int = 32, height: int = 24) -> bytes:
    """A small JPEG whose pixels encode ``value`` (a horizontal gradient offset by it)."""
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    image = np.clip(ramp + value, 0, 255).astype(np.uint8) * np.ones((height, 1, 3), np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def make_release(
    path: Path,
    stem: str,
    videos: dict[str, int],
    *,
    step: int = 1,
    size: tuple[int, int] = (32, 24),
    extra: dict[str, bytes] | None = None,
) -> Path:
    """``<stem>/JPEGImages/<video>/<frame>.jpg`` for each video; frames numbered 0, step, 2·step…"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{stem}/JPEGImages/", b"")
        for video, frames in videos.items():
            for i in range(frames):
                archive.writestr(f"{stem}/JPEGImages/{video}/{i * step:05d}.jpg", jpeg(i, *size))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def make_members(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A zip holding exactly ``members`` in order; a name may repeat (zip allows it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name" warning
        for name, data in members:
            archive.writestr(name, data)
    return path


def frames(stem: str, video: str, numbers, size: tuple[int, int] = (32, 24)) -> list:
    """``(name, jpeg)`` members of ``video`` for the given frame numbers."""
    return [(f"{stem}/JPEGImages/{video}/{i:05d}.jpg", jpeg(i, *size)) for i in numbers]


def png(value: int, width: int = 32, height: int = 24) -> bytes:
    image = np.full((height, width, 3), value, np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()
