"""Release archives -> the layout the E2FGVI trainer reads (docs/official-e2fgvi.md §2.1).

Writes ``JPEGImages/<video>.zip`` (frames at the zip root, sorted) for train and test videos alike,
plus ``train.json`` / ``test.json`` (video id -> frame count). Frames are streamed from the release
archive one video at a time; each per-video zip is written atomically and stamped (zip comment)
with what produced it, so a rerun after an interruption keeps finished videos and redoes the rest
(after reading their source frames again through the zip CRC check).

All or nothing: a run first takes the index files away and moves finished zips into a hidden work
folder, builds there, and only when every video passed puts ``JPEGImages`` back and writes the
index. A refused or interrupted run therefore leaves nothing a later stage could take for a
complete data set, and the next run reuses what was finished.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from e2fgvi.atomic import atomic_open, make_dir, write_json
from e2fgvi.config import PrepareParams, params_hash
from e2fgvi.data.archive import ARCHIVES, SourceArchive, deterministic_zipinfo
from e2fgvi.data.frames import check_index, decode_jpeg, resize_frame
from e2fgvi.errors import UserError, write_error

log = logging.getLogger(__name__)

FRAMES_DIR = "JPEGImages"
WORK_DIR = ".JPEGImages.partial"  # beside JPEGImages; DVC neither tracks nor clears it
# Bumped when the checks a finished video passed change, so older outputs are redone once.
STAMP_VERSION = "2"
# E2FGVI estimates flow between neighbouring frames: a test video needs two.
MIN_TEST_FRAMES = 2


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
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
    except OSError:
        kind = None
    if kind != "JPEG":
        raise UserError(f"{where}: not a JPEG ({kind or 'corrupt'}); re-download the archive")
    return f"{width}x{height}"


def _check_one_size(source: SourceArchive, video: str, resolutions: list[str]) -> str:
    """The video's one source size; refuse (never resize silently) a frame of another size."""
    infos = source.videos[video]
    for info, resolution in zip(infos, resolutions, strict=True):
        if resolution != resolutions[0]:
            raise UserError(
                f"{source.path}: video {video} frame {PurePosixPath(info.filename).name} is "
                f"{resolution} but {PurePosixPath(infos[0].filename).name} is {resolutions[0]};"
                " a video's frames must share one size: re-download the archive or fix that video"
            )
    return resolutions[0]


def _stamp(source: SourceArchive, video: str, cfg: PrepareParams) -> str:
    return f"{STAMP_VERSION}:{params_hash(cfg)}:{source.fingerprint(video)}"


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
        source.verify(video)  # the same central directory can sit over damaged member data
        return done
    infos = source.videos[video]
    payloads = [(source.read(info), f"{source.path}: member {info.filename}") for info in infos]
    # cv2/PIL release the GIL, so threads convert frames in parallel; order is kept by map().
    converted = list(pool.map(lambda p: _convert(p[0], p[1], cfg), payloads))
    sizes = [r for _, r in converted]
    if not sizes[0]:  # not decoded (verify_jpeg off): the headers tell
        sizes = list(pool.map(lambda p: _header_resolution(*p), payloads))
    resolution = _check_one_size(source, video, sizes)
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


def _take_back(out_dir: Path) -> Path:
    """Remove the index files and move finished zips into the work folder (returned)."""
    for split in ARCHIVES:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / f"{split}.json").unlink()
    work = make_dir(out_dir / WORK_DIR)
    frames_dir = out_dir / FRAMES_DIR
    if frames_dir.is_dir():
        for path in frames_dir.iterdir():
            if path.suffix == ".zip" and not (work / path.name).exists():
                os.replace(path, work / path.name)
        shutil.rmtree(frames_dir)
    return work


def _check_videos(sources: dict[str, SourceArchive], min_train_frames: int) -> None:
    """What the central directories can tell, for both archives, before anything is written."""
    seen: dict[str, str] = {}
    for split, source in sources.items():
        if not source.videos:
            raise UserError(f"{source.path}: no <video>/<frame>.jpg under JPEGImages/")
        for video in source.videos:
            if video in seen:
                raise UserError(f"{source.path}: video {video} is also in the {seen[video]} split")
            seen[video] = split
    sources["train"].check_lengths(
        min_train_frames,
        "what one training clip needs (train.num_local_frames + train.num_ref_frames); remove "
        "those videos from the archive or lower those params",
    )
    sources["test"].check_lengths(
        MIN_TEST_FRAMES,
        "the least E2FGVI can inpaint (it needs flow); remove those videos from the archive",
    )


def prepare_dataset(
    raw_dir: Path, out_dir: Path, cfg: PrepareParams, *, min_train_frames: int
) -> dict[str, object]:
    """Convert both release archives in ``raw_dir``; returns the data report.

    ``min_train_frames``: the frames one training clip takes; shorter training videos are refused.
    """
    if cfg.resize and (len(cfg.resize) != 2 or min(cfg.resize) < 1):
        raise UserError(
            f"params.yaml prepare.resize: expected [width, height] or [], got {cfg.resize}"
        )
    work = _take_back(out_dir)
    stats: dict[str, dict[str, VideoStats]] = {}
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        sources = {
            split: stack.enter_context(SourceArchive(raw_dir / f"{stem}.zip"))
            for split, stem in ARCHIVES.items()
        }
        _check_videos(sources, min_train_frames)
        for split, source in sources.items():
            stats[split] = {
                video: write_video(source, video, work / f"{video}.zip", cfg, pool)
                for video in tqdm(source.videos, desc=f"prepare {split}", unit="video")
            }
    _remove_stale(work, {video for split in stats.values() for video in split})
    indexes = {split: {v: s.frames for v, s in videos.items()} for split, videos in stats.items()}
    for split, index in indexes.items():
        check_index(index, out_dir / f"{split}.json", work)
    try:
        os.replace(work, out_dir / FRAMES_DIR)
    except OSError as exc:
        raise write_error(exc, out_dir / FRAMES_DIR) or exc from None
    report: dict[str, object] = {}
    for split, index in indexes.items():
        write_json(out_dir / f"{split}.json", index)
        report[split] = _split_report(stats[split])
        log.info("%s: %d videos, %d frames", split, len(index), report[split]["frames"])
    report["output_resolution"] = "x".join(map(str, cfg.resize)) if cfg.resize else "original"
    return report
