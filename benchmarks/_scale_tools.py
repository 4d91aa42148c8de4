"""Tools of benchmarks/scale.py: YouTube-VOS-shaped archives, a process-tree RSS meter, disk use."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from e2fgvi.atomic import atomic_open
from e2fgvi.data.archive import ARCHIVES
from e2fgvi.data.frames import deterministic_zipinfo

# YouTube-VOS 2018: 3,471 training and 508 test videos of 3-6 s at 30 fps.
FULL_TRAIN, FULL_TEST = 3471, 508
FPS, MIN_SECONDS, MAX_SECONDS = 30, 3, 6


def video_lengths(count: int, seed: int, frames: int | None = None) -> list[int]:
    """Frames per video: drawn uniformly from 3-6 s at 30 fps, or ``frames`` for every video."""
    if frames:
        return [frames] * count
    rng = np.random.default_rng(seed)
    return rng.integers(MIN_SECONDS * FPS, MAX_SECONDS * FPS + 1, count).tolist()


def _scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random picture with texture: JPEG sizes like real frames, not like noise."""
    coarse = rng.integers(0, 256, (max(height // 40, 2), max(width // 40, 2), 3), np.uint8)
    smooth = cv2.resize(coarse, (width + 64, height + 64), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 6, smooth.shape)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def _frames(scene: np.ndarray, count: int, width: int, height: int, quality: int) -> list[bytes]:
    """``count`` JPEG frames panning across ``scene`` (every frame differs)."""
    out = []
    for i in range(count):
        dx, dy = (i * 2) % 64, (i // 32) % 64
        crop = np.ascontiguousarray(scene[dy : dy + height, dx : dx + width])
        out.append(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    return out


def build_archives(
    folder: Path, train: int, test: int, size: tuple[int, int], seed: int, frames: int | None
) -> dict[str, object]:
    """``train_all_frames.zip`` / ``test_all_frames.zip`` in the release layout; their figures.

    Archives already in ``folder`` from an earlier run with the same arguments are reused.
    """
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    done = folder / f"built-{train}-{test}-{width}x{height}-{seed}-{frames}.json"
    if done.exists():
        return json.loads(done.read_text())
    total_frames = 0
    for split, count in (("train", train), ("test", test)):
        stem = ARCHIVES[split]
        lengths = video_lengths(count, seed + (split == "test"), frames)
        rng = np.random.default_rng([seed, split == "test"])
        tmp = folder / f".{stem}.zip.tmp"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(deterministic_zipinfo(f"{stem}/JPEGImages/"), b"")
            for number, length in enumerate(lengths):
                video = f"{split[:2]}{number:08x}"
                scene = _scene(rng, width, height)
                for i, data in enumerate(_frames(scene, length, width, height, 90)):
                    name = f"{stem}/JPEGImages/{video}/{i:05d}.jpg"
                    archive.writestr(deterministic_zipinfo(name), data)
                total_frames += length
        os.replace(tmp, folder / f"{stem}.zip")
    archive_bytes = sum((folder / f"{s}.zip").stat().st_size for s in ARCHIVES.values())
    built = {"videos": train + test, "frames": total_frames, "archive_bytes": archive_bytes}
    done.write_text(json.dumps(built))
    return built


def _tree_rss(root: int) -> tuple[int, int]:
    """(sum of RSS over ``root`` and its descendants, largest single RSS), in bytes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, largest, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        largest = max(largest, rss.get(pid, 0))
        todo += children.get(pid, [])
    return total, largest


@dataclass
class Timed:
    wall_s: float
    peak_tree_rss: int
    peak_single_rss: int
    output: str


def run_measured(command: list[str], cwd: Path, env: dict[str, str], poll_s: float = 0.2) -> Timed:
    """Run ``command``; its wall time and the peak RSS of its whole process tree (polled)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peaks = [0, 0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            total, largest = _tree_rss(proc.pid)
            peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)
            done.wait(poll_s)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    output = proc.communicate()[0]
    done.set()
    watcher.join()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{output[-3000:]}")
    return Timed(wall, peaks[0], peaks[1], output)


def disk_use(folders: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Per folder: allocated bytes, and bytes whose inode was not already counted before it."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for label, folder in folders.items():
        total = new = 0
        paths = [folder] if folder.is_file() else folder.rglob("*") if folder.exists() else []
        for path in paths:
            st = path.lstat()
            if not path.is_file() or path.is_symlink():
                continue
            total += st.st_blocks * 512
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                new += st.st_blocks * 512
        out[label] = {"bytes": total, "new_bytes": new}
    return out


def load() -> str:
    """The machine's load averages now (``uptime``'s three numbers)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def floor_seconds(archives: Path, prepared: Path, out: Path) -> float:
    """Seconds to only read every archive member (CRC checked) and write the prepared zips' bytes.

    The zips' bytes are loaded first (not timed); the timed part is what prepare cannot avoid:
    the same reads and the same writes (atomic, like prepare's), on the same disk.
    """
    frames = {}
    for path in sorted((prepared / "JPEGImages").glob("*.zip")):
        with zipfile.ZipFile(path) as done:
            frames[path.name] = [(i.filename, done.read(i)) for i in done.infolist()]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for stem in ARCHIVES.values():
        with zipfile.ZipFile(archives / f"{stem}.zip") as source:
            for info in source.infolist():
                source.read(info)
    for name, members in frames.items():
        with atomic_open(out / name) as handle, zipfile.ZipFile(handle, "w") as zipped:
            for member, data in members:
                zipped.writestr(deterministic_zipinfo(member), data)
    return time.perf_counter() - start
