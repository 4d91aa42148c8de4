"""Random free-form moving masks, a pure seeded re-implementation of E2FGVI's training masks.

The official ``create_random_shape_with_random_motion`` (docs/official-e2fgvi.md §2.4) draws a random closed
Bézier shape with Matplotlib, reads the canvas back and moves the shape with a random walk. This
module rasterises the same shape with ``cv2.fillPoly`` (no Matplotlib) and reproduces the geometry
that Matplotlib's default figure imposes, so the hole-area distribution matches the official one
(per-frame hole share about 7.2 % of a 240×432 frame, median 6.6 %, range about 2–19 %).

Official quirk kept on purpose: the initial speed comes from ``np.random.uniform(3)``, which
means ``uniform(low=3, high=1.0)``, i.e. a speed in (1, 3], not (0, 3). params.yaml's
``initial_speed_range: [3.0, 1.0]`` spells that out as (low, high) of the same formula
``low + (high - low) * U[0, 1)``.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from e2fgvi.atomic import make_dir
from e2fgvi.config import MaskParams
from e2fgvi.data.frames import write_zip
from e2fgvi.errors import UserError

# Matplotlib's default figure draws the axes inside the subplot box given by rcParams
# figure.subplot.{left,right,bottom,top} = 0.125, 0.9, 0.11, 0.88, and the official code sets both
# axis limits to 1.1 × the extreme vertex coordinates. The canvas is then resized to the requested
# (width, height), so these margins shrink the shape: its bounding box ends up about 56 % of the
# requested box (measured: 0.56 of the height, 0.57 of the width). Reproduced explicitly here.
AXES_LEFT, AXES_RIGHT = 0.125, 0.9
AXES_BOTTOM, AXES_TOP = 0.11, 0.88
AXIS_LIMIT_PAD = 1.1
# Points sampled on each cubic Bézier segment; enough for a smooth outline at 432×240.
BEZIER_SAMPLES = 32
# The official code marks a pixel as hole only if it is still exactly black after the antialiased
# canvas is resized, i.e. only pixels wholly inside the outline. Rasterising at 2× and keeping a
# pixel only when all its sub-pixels are inside reproduces that: mean hole share 7.6 % vs 7.7 %
# for the Matplotlib pipeline on 3,000 samples (plain rasterisation gives 7.9 %).
SUPERSAMPLE = 2
EDGE_NUMS = (6, 7, 8)
RATIOS = (0.6, 0.7, 0.8)


def random_vertices(rng: np.random.Generator) -> np.ndarray:
    """Control points of a random closed path: 3·edge_num + 1 points, the last equal to the first.

    Vertices sit at evenly spaced angles on the unit circle, each radius scaled by
    (1 − ratio + 2·ratio·U[0, 1)), with edge_num in {6, 7, 8} and ratio in {0.6, 0.7, 0.8}.
    """
    edge_num = int(rng.choice(EDGE_NUMS))
    ratio = float(rng.choice(RATIOS))
    points = 3 * edge_num + 1
    angles = np.linspace(0.0, 2.0 * np.pi, points)
    radii = 1.0 - ratio + 2.0 * ratio * rng.random(points)
    verts = np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    verts[-1] = verts[0]  # closes the path without a straight closing segment
    return verts


def rasterise(verts: np.ndarray, height: int, width: int) -> np.ndarray:
    """The path filled on a (height, width) canvas placed as the official figure places it."""
    fine = np.zeros((height * SUPERSAMPLE, width * SUPERSAMPLE), np.uint8)
    outline = _to_pixels(_bezier_outline(verts), verts, height * SUPERSAMPLE, width * SUPERSAMPLE)
    cv2.fillPoly(fine, [outline], 1)
    return fine.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE).min(axis=(1, 3))


def random_shape(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One random closed Bézier blob, cropped to its bounding box: uint8 {0, 1}, 1 = hole."""
    canvas = rasterise(random_vertices(rng), height, width)
    rows, cols = np.nonzero(canvas)
    if rows.size == 0:  # only for absurdly small boxes; keep one pixel rather than no hole
        return np.ones((1, 1), np.uint8)
    # The official crop uses PIL's exclusive right/bottom edge, dropping the last row and column.
    bottom, right = max(rows.max(), rows.min() + 1), max(cols.max(), cols.min() + 1)
    return np.ascontiguousarray(canvas[rows.min() : bottom, cols.min() : right])


def _bezier_outline(verts: np.ndarray) -> np.ndarray:
    """Dense points on the path MOVETO v0, then CURVE4 (v1, v2, v3), (v4, v5, v6), …"""
    t = np.linspace(0.0, 1.0, BEZIER_SAMPLES, endpoint=False)[:, None]
    segments = []
    for start in range(0, len(verts) - 3, 3):
        p0, p1, p2, p3 = verts[start : start + 4]
        segments.append(
            (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
        )
    return np.concatenate(segments)


def _to_pixels(curve: np.ndarray, verts: np.ndarray, height: int, width: int) -> np.ndarray:
    """Map data coordinates to canvas pixels as the official Matplotlib figure does."""
    low, high = AXIS_LIMIT_PAD * verts.min(), AXIS_LIMIT_PAD * verts.max()
    unit = (curve - low) / (high - low)
    x = (AXES_LEFT + (AXES_RIGHT - AXES_LEFT) * unit[:, 0]) * width
    # Matplotlib's y axis points up; image rows point down.
    y = (1.0 - (AXES_BOTTOM + (AXES_TOP - AXES_BOTTOM) * unit[:, 1])) * height
    return np.round(np.stack([x, y], axis=1)).astype(np.int32)


def _trajectory(
    rng: np.random.Generator,
    num_frames: int,
    start: tuple[int, int],
    limits: tuple[int, int],
    cfg: MaskParams,
) -> list[tuple[int, int]]:
    """Top-left (row, col) per frame of the official random walk (docs/official-e2fgvi.md §2.4)."""
    low, high = cfg.initial_speed_range
    speed = low + (high - low) * rng.random()
    angle = rng.uniform(0.0, 2.0 * math.pi)
    row, col = start
    positions = [start]
    for _ in range(num_frames - 1):
        # int() truncates toward zero, as the official code does.
        row += int(speed * math.cos(angle))
        col += int(speed * math.sin(angle))
        speed += rng.normal(0.0, cfg.speed_std)
        angle += rng.normal(0.0, cfg.angle_std)
        if not (0 <= row <= limits[0] and 0 <= col <= limits[1]):
            speed = abs(rng.normal(0.0, cfg.speed_std))
            angle = rng.uniform(0.0, 2.0 * math.pi)
        row, col = min(max(row, 0), limits[0]), min(max(col, 0), limits[1])
        positions.append((row, col))
    return positions


def random_mask_sequence(
    rng: np.random.Generator,
    num_frames: int,
    height: int,
    width: int,
    cfg: MaskParams,
    moving_prob: float | None = None,
    frames: Sequence[int] | None = None,
) -> np.ndarray:
    """A (num_frames, height, width) uint8 {0, 1} mask video (1 = hole), official-style.

    ``frames`` (indices into the video) returns only those frames, in that order: the same masks
    as indexing the whole video, drawn from the same random numbers, without painting the rest
    (a training clip uses 8 of a video's ~130 frames).

    The shape is fixed within the video. With probability ``moving_prob`` (default
    ``cfg.moving_prob``) it moves by the official random walk, otherwise it stays put. The initial
    speed is ``low + (high - low) * U`` with ``(low, high) = cfg.initial_speed_range``; the official
    ``[3.0, 1.0]`` gives speeds in (1, 3] (``np.random.uniform(3)`` quirk, see module docstring).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if len(cfg.initial_speed_range) != 2:
        raise UserError("params.yaml masks.initial_speed_range: expected [low, high]")
    box_h = int(rng.integers(height // 3, height))
    box_w = int(rng.integers(width // 3, width))
    shape = random_shape(rng, box_h, box_w)
    limits = (height - shape.shape[0], width - shape.shape[1])
    start = (int(rng.integers(0, limits[0] + 1)), int(rng.integers(0, limits[1] + 1)))
    prob = cfg.moving_prob if moving_prob is None else moving_prob
    moving = rng.random() < prob
    positions = _trajectory(rng, num_frames, start, limits, cfg) if moving else [start] * num_frames
    picked = range(num_frames) if frames is None else [int(i) for i in frames]
    if any(not 0 <= i < num_frames for i in picked):
        raise ValueError(f"frames {list(picked)} outside a {num_frames}-frame video")
    masks = np.zeros((len(picked), height, width), np.uint8)
    for frame, i in zip(masks, picked, strict=True):
        row, col = positions[i]
        frame[row : row + shape.shape[0], col : col + shape.shape[1]] = shape
    return masks


def video_rng(seed: int, video: str) -> np.random.Generator:
    """A generator for one video from (seed, video id), independent of the other videos."""
    digest = hashlib.sha256(f"{seed}:{video}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def mask_png(mask: np.ndarray) -> bytes:
    """One {0, 1} mask as the PNG the masks stage stores: 8-bit grey, 0 = valid, 255 = hole."""
    return cv2.imencode(".png", mask * 255)[1].tobytes()


def write_eval_masks(index: dict[str, int], out_dir: Path, cfg: MaskParams) -> None:
    """``out_dir/<video>.zip`` holding ``00000.png …`` (one mask per frame), each written atomically.

    One file per video instead of one per frame: DVC stats every output file on each
    ``dvc status``, and the test split has ~68,000 frames. Entries of earlier runs that the index
    no longer names (videos removed, the former per-frame folders) are removed.
    """
    for video in index:
        if not video or video in (".", "..") or "/" in video or "\\" in video:
            raise UserError(f"test index: video id {video!r} is not a plain file name")
    make_dir(out_dir)
    for video, frames in tqdm(sorted(index.items()), desc="eval masks", unit="video"):
        rng = video_rng(cfg.eval_seed, video)
        masks = random_mask_sequence(
            rng, frames, cfg.height, cfg.width, cfg, moving_prob=cfg.eval_moving_prob
        )
        write_zip(
            out_dir / f"{video}.zip", ((f"{i:05d}.png", mask_png(m)) for i, m in enumerate(masks))
        )
    keep = {f"{video}.zip" for video in index}
    for stale in out_dir.iterdir():
        if stale.name in keep:
            continue
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
