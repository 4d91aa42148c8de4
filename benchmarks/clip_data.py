"""YouTube-VOS-shaped training data for loader benchmarks, both layouts at once.

``<root>/JPEGImages/<video>.zip`` (flat JPEG members 00000.jpg ...) and ``<root>/train.json``
(video -> frame count) is what our ``TrainClips`` reads and also what the official
``TrainDataset`` reads as ``data_root/name/...`` with ``name = root.name``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def read_clip(path: Path, max_frames: int) -> list[np.ndarray]:
    """Up to ``max_frames`` RGB frames of a video file."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < max_frames:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise SystemExit(f"{path}: no frames decoded")
    return frames


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def write_videos(
    frames: list[np.ndarray],
    root: Path,
    videos: int,
    size: tuple[int, int] | None,
    quality: int,
) -> Path:
    """``videos`` copies of ``frames`` (resized PIL-bicubic to ``size`` = (w, h) if given)."""
    if size is not None:
        frames = [
            np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames
        ]
    encoded = [encode_jpeg(f, quality) for f in frames]
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    index = {}
    for v in range(videos):
        name = f"video{v:04d}"
        with zipfile.ZipFile(root / "JPEGImages" / f"{name}.zip", "w", zipfile.ZIP_STORED) as z:
            for i, data in enumerate(encoded):
                z.writestr(f"{i:05d}.jpg", data)
        index[name] = len(encoded)
    (root / "train.json").write_text(json.dumps(index))
    return root
