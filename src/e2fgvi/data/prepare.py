"""Release archives -> the layout the E2FGVI trainer reads (docs/official-e2fgvi.md §2.1).

Writes ``JPEGImages/<video>.zip`` (frames at the zip root, sorted) for train and test videos alike,
plus ``train.json`` / ``test.json`` (video id -> frame count). Frames are streamed from the release
archive one video at a time; each per-video zip is written atomically and stamped (zip comment)
with what produced it, so a rerun after an interruption keeps finished videos and redoes the rest
(after reading their source frames again through the zip CRC check). This process reads the
archive and writes the zips in video order; one worker process per core decodes, checks and
resizes the frames (the same function, so the same bytes, as in one process).

All or nothing: a run first takes the index files away and moves finished zips into a hidden work
folder, builds there, and only when every video passed puts ``JPEGImages`` back and writes the
index. A refused or interrupted run therefore leaves nothing a later stage could take for a
complete data set, and the next run reuses what was finished.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import zipfile
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
from PIL import Image
from tqdm import tqdm

from e2fgvi.atomic import make_dir, write_json
from e2fgvi.config import PrepareParams, params_hash
from e2fgvi.data.archive import ARCHIVES, SourceArchive
from e2fgvi.data.frames import check_index, decode_jpeg, resize_frame, write_zip
from e2fgvi.errors import UserError, write_error

log = logging.getLogger(__name__)

FRAMES_DIR = "JPEGImages"
WORK_DIR = ".JPEGImages.partial"  # beside JPEGImages; DVC neither tracks nor clears it
# Bumped when the checks a finished video passed change, so older outputs are redone once.
STAMP_VERSION = "2"
# E2FGVI estimates flow between neighbouring frames: a test video needs two.
MIN_TEST_FRAMES = 2
# A video's converted frames and the source size of each ("WxH").
_Converted = tuple[list[bytes], list[str]]


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
    if not cfg.resize:
        # Kept as they are, so decoded only to check them: at 1/8 scale libjpeg still reads the
        # whole entropy-coded stream (what damage breaks) but runs a tiny inverse DCT, several
        # times faster than a full decode at 1280x720 (benchmarks/prepare.py prints the ratio).
        decode_jpeg(data, where, reduction=8)
        return data, _header_resolution(data, where)
    rgb = decode_jpeg(data, where)
    resolution = f"{rgb.shape[1]}x{rgb.shape[0]}"
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


def _convert_video(payloads: list[tuple[bytes, str]], cfg: PrepareParams) -> _Converted:
    """One video's output frames and source sizes (runs in a worker process)."""
    converted = [_convert(data, where, cfg) for data, where in payloads]
    sizes = [r for _, r in converted]
    if not sizes[0]:  # not decoded (verify_jpeg off): the headers tell
        sizes = [_header_resolution(data, where) for data, where in payloads]
    return [data for data, _ in converted], sizes


def _start_worker() -> None:
    # One process per core already: OpenCV's own threads would only oversubscribe the cores.
    cv2.setNumThreads(1)


def workers_here() -> int:
    """Processes that convert frames: one per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Converter:
    """Frame conversion on a process pool (``workers`` > 1) or in this process; same bytes."""

    def __init__(self, cfg: PrepareParams, workers: int) -> None:
        self.cfg = cfg
        self.pool = None
        if workers > 1:
            # forkserver, not fork: a child forked after OpenCV's thread pool ran can hang for
            # good; the server imports only this module (not the caller's), then forks quickly.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self.pool = ProcessPoolExecutor(workers, context, initializer=_start_worker)

    def submit(self, payloads: list[tuple[bytes, str]]) -> Future[_Converted]:
        if self.pool is not None:
            return self.pool.submit(_convert_video, payloads, self.cfg)
        done: Future[_Converted] = Future()
        done.set_result(_convert_video(payloads, self.cfg))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


@dataclass(frozen=True)
class _Job:
    """One video on its way: the finished zip's stats, or the conversion still running."""

    video: str
    dest: Path
    stamp: str
    done: VideoStats | None = None
    converted: Future[_Converted] | None = None


def start_video(
    source: SourceArchive, video: str, dest: Path, cfg: PrepareParams, converter: _Converter
) -> _Job:
    """Reuse ``dest`` if it is finished, else read the frames and hand them to the converter."""
    stamp = _stamp(source, video, cfg)
    if (done := _finished(dest, stamp)) is not None:
        source.verify(video)  # the same central directory can sit over damaged member data
        return _Job(video, dest, stamp, done=done)
    infos = source.videos[video]
    payloads = [(source.read(info), f"{source.path}: member {info.filename}") for info in infos]
    return _Job(video, dest, stamp, converted=converter.submit(payloads))


def finish_video(source: SourceArchive, job: _Job) -> VideoStats:
    """Write the converted frames of ``job`` into its zip (atomic), in frame order."""
    if job.done is not None:
        return job.done
    frames, sizes = job.converted.result()
    infos = source.videos[job.video]
    resolution = _check_one_size(source, job.video, sizes)
    meta = {
        "stamp": job.stamp,
        "frames": len(infos),
        "resolution": resolution,
        "bytes_in": sum(i.file_size for i in infos),
    }
    members = zip((PurePosixPath(i.filename).name for i in infos), frames, strict=True)
    write_zip(job.dest, members, comment=json.dumps(meta, sort_keys=True).encode())
    return VideoStats(len(infos), meta["bytes_in"], job.dest.stat().st_size, resolution)


def _convert_split(
    source: SourceArchive, work: Path, converter: _Converter, window: int, desc: str
) -> dict[str, VideoStats]:
    """Every video of one archive, read in order while up to ``window`` convert at once."""
    stats: dict[str, VideoStats] = {}
    pending: collections.deque[_Job] = collections.deque()
    for video in tqdm(source.videos, desc=desc, unit="video"):
        pending.append(start_video(source, video, work / f"{video}.zip", converter.cfg, converter))
        if len(pending) > window:
            job = pending.popleft()
            stats[job.video] = finish_video(source, job)
    while pending:
        job = pending.popleft()
        stats[job.video] = finish_video(source, job)
    return stats


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
    raw_dir: Path,
    out_dir: Path,
    cfg: PrepareParams,
    *,
    min_train_frames: int,
    workers: int | None = None,
) -> dict[str, object]:
    """Convert both release archives in ``raw_dir``; returns the data report.

    ``min_train_frames``: the frames one training clip takes; shorter training videos are refused.
    ``workers``: converting processes (None: one per core; 1: all in this process, same bytes).
    """
    if cfg.resize and (len(cfg.resize) != 2 or min(cfg.resize) < 1):
        raise UserError(
            f"params.yaml prepare.resize: expected [width, height] or [], got {cfg.resize}"
        )
    work = _take_back(out_dir)
    stats: dict[str, dict[str, VideoStats]] = {}
    workers = workers or workers_here()
    with contextlib.ExitStack() as stack:
        sources = {
            split: stack.enter_context(SourceArchive(raw_dir / f"{stem}.zip"))
            for split, stem in ARCHIVES.items()
        }
        _check_videos(sources, min_train_frames)
        converter = _Converter(cfg, workers)
        stack.callback(converter.close)
        # Two videos per worker in flight: the reading never waits, memory stays a few videos.
        window = 2 * workers if workers > 1 else 0
        for split, source in sources.items():
            stats[split] = _convert_split(source, work, converter, window, f"prepare {split}")
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
