"""Release archives -> the layout the E2FGVI trainer reads (reference §2.1).

Writes ``JPEGImages/<video>.zip`` (frames at the zip root, sorted) for train and test videos alike,
plus ``train.json`` / ``test.json`` (video id -> frame count). Frames are streamed from the release
archive one video at a time; each per-video zip is written atomically and stamped (zip comment)
with what produced it, so a rerun after an interruption keeps finished videos and redoes the rest.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from e2fgvi.atomic import atomic_open, write_json
from e2fgvi.config import PrepareParams, params_hash
from e2fgvi.data.archive import ARCHIVES, SourceArchive, deterministic_zipinfo
from e2fgvi.data.frames import check_index, decode_jpeg, load_index, resize_frame
from e2fgvi.errors import UserError

log = logging.getLogger(__name__)

FRAMES_DIR = "JPEGImages"


@dataclass(frozen=True)
class VideoStats:
    frames: int
    bytes_in: int
    bytes_out: int
    resolution: str  # source "WxH"


def _convert(data: bytes, where: str, cfg: PrepareParams) -> tuple[bytes, str]:
    """One frame's output bytes and its source resolution 'WxH' ('' when not decoded)."""
    if not cfg.resize and not cfg.verify_jpeg:
        return data, ""
    rgb = decode_jpeg(data, where)
    resolution = f"{rgb.shape[1]}x{rgb.shape[0]}"
    if not cfg.resize:
        return data, resolution
    small = resize_frame(rgb, (cfg.resize[0], cfg.resize[1]))
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])[1]
    return encoded.tobytes(), resolution


def _header_resolution(data: bytes, where: str) -> str:
    """'WxH' from a JPEG header alone (no decoding)."""
    try:
        width, height = Image.open(io.BytesIO(data)).size
    except OSError:
        raise UserError(f"{where}: not a JPEG (corrupt); re-download the archive") from None
    return f"{width}x{height}"


def _stamp(source: SourceArchive, video: str, cfg: PrepareParams) -> str:
    return f"{params_hash(cfg)}:{source.fingerprint(video)}"


def _finished(dest: Path, stamp: str) -> VideoStats | None:
    """Stats of an existing per-video zip made from the same source and params, else None."""
    try:
        with zipfile.ZipFile(dest) as done:
            meta = json.loads(done.comment.decode())
            if meta.get("stamp") != stamp or len(done.namelist()) != meta.get("frames"):
                return None
            return VideoStats(
                meta["frames"], meta["bytes_in"], dest.stat().st_size, meta["resolution"]
            )
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError):
        return None


def write_video(
    source: SourceArchive, video: str, dest: Path, cfg: PrepareParams, pool: ThreadPoolExecutor
) -> VideoStats:
    """Stream one video's frames into ``dest`` (atomic), converting them on the thread pool."""
    stamp = _stamp(source, video, cfg)
    if (done := _finished(dest, stamp)) is not None:
        return done
    infos = source.videos[video]
    payloads = [(source.read(info), f"{source.path}: member {info.filename}") for info in infos]
    # cv2/PIL release the GIL, so threads convert frames in parallel; order is kept by map().
    converted = list(pool.map(lambda p: _convert(p[0], p[1], cfg), payloads))
    resolutions = Counter(r for _, r in converted)
    if not converted[0][1]:  # not decoded (verify_jpeg off): the first frame's header tells
        resolutions = Counter({_header_resolution(*payloads[0]): len(payloads)})
    if len(resolutions) > 1:
        log.warning("%s: video %s mixes frame sizes %s", source.path, video, sorted(resolutions))
    resolution = resolutions.most_common(1)[0][0]
    meta = {
        "stamp": stamp,
        "frames": len(infos),
        "resolution": resolution,
        "bytes_in": sum(i.file_size for i in infos),
    }
    with atomic_open(dest) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as out:
        for info, (data, _) in zip(infos, converted, strict=True):
            out.writestr(deterministic_zipinfo(PurePosixPath(info.filename).name), data)
        out.comment = json.dumps(meta, sort_keys=True).encode()
    return VideoStats(len(infos), meta["bytes_in"], dest.stat().st_size, resolution)


def _split_report(stats: dict[str, VideoStats]) -> dict[str, object]:
    frames = [s.frames for s in stats.values()]
    return {
        "videos": len(stats),
        "frames": sum(frames),
        "min_frames": min(frames, default=0),
        "max_frames": max(frames, default=0),
        "bytes_in": sum(s.bytes_in for s in stats.values()),
        "bytes_out": sum(s.bytes_out for s in stats.values()),
        "resolutions": dict(sorted(Counter(s.resolution for s in stats.values()).items())),
    }


def _remove_stale(frames_dir: Path, keep: set[str]) -> None:
    """Drop per-video zips not in the current index and temp files of interrupted writes."""
    for path in frames_dir.iterdir():
        stale_zip = path.suffix == ".zip" and path.stem not in keep
        if stale_zip or (path.name.startswith(".") and path.name.endswith(".tmp")):
            path.unlink()


def prepare_dataset(raw_dir: Path, out_dir: Path, cfg: PrepareParams) -> dict[str, object]:
    """Convert both release archives in ``raw_dir``; returns the data report."""
    if cfg.resize and (len(cfg.resize) != 2 or min(cfg.resize) < 1):
        raise UserError(
            f"params.yaml prepare.resize: expected [width, height] or [], got {cfg.resize}"
        )
    frames_dir = out_dir / FRAMES_DIR
    frames_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {}
    seen: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for split, stem in ARCHIVES.items():
            with SourceArchive(raw_dir / f"{stem}.zip") as source:
                if not source.videos:
                    raise UserError(f"{source.path}: no <video>/<frame>.jpg under JPEGImages/")
                for video in source.videos:
                    if video in seen:
                        raise UserError(
                            f"{source.path}: video {video} is also in the {seen[video]} split"
                        )
                    seen[video] = split
                stats = {
                    video: write_video(source, video, frames_dir / f"{video}.zip", cfg, pool)
                    for video in tqdm(source.videos, desc=f"prepare {split}", unit="video")
                }
            index_path = out_dir / f"{split}.json"
            write_json(index_path, {v: s.frames for v, s in stats.items()})
            check_index(load_index(index_path), index_path, frames_dir)
            report[split] = _split_report(stats)
            log.info("%s: %d videos, %d frames", split, len(stats), report[split]["frames"])
    _remove_stale(frames_dir, set(seen))
    report["output_resolution"] = "x".join(map(str, cfg.resize)) if cfg.resize else "original"
    return report
