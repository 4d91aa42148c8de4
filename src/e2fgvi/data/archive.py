"""The YouTube-VOS 2018 all-frames archives: member layout, safety and release checks, reading.

A release archive holds ``<stem>/JPEGImages/<video>/<frame>.jpg``. This module lists its videos
from the central directory alone (nothing is extracted) and refuses what would go wrong later:
member names that escape the output folder, the 6-fps annotated release, a truncated archive,
and a video that is not a complete run of JPEG frames 00000, 00001, … (a gap, a frame twice,
a PNG, an empty folder). Reading a member checks its CRC.
"""

from __future__ import annotations

import hashlib
import itertools
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

from e2fgvi.data.frames import is_jpeg_name
from e2fgvi.errors import UserError

# Split -> the release's archive stem (``<stem>.zip`` holding ``<stem>/JPEGImages/…``).
ARCHIVES = {"train": "train_all_frames", "test": "test_all_frames"}
# The annotated release keeps every 5th frame of the 30-fps video (00000, 00005, …).
ANNOTATED_STEP = 5
# Image files a user might put in place of JPEG frames, named in the refusal.
_IMAGE_SUFFIXES = {"png", "bmp", "gif", "tif", "tiff", "webp", "heic", "avif"}
def check_member_name(archive: Path, name: str) -> None:
    """Refuse absolute names, drive letters, backslashes and '..' (they escape the output)."""
    parts = PurePosixPath(name).parts
    if (
        name.startswith(("/", "\\"))
        or "\\" in name
        or (parts and parts[0].endswith(":"))
        or any(part in ("..", ".") for part in parts)
    ):
        raise UserError(
            f"{archive}: member {name!r} would escape the output folder; refusing this archive"
            " (it is not a YouTube-VOS release, re-download it)"
        )


def _check_not_annotated(archive: Path, video: str, names: list[str]) -> None:
    """Detect the 6-fps annotated release (frames 00000, 00005, 00010, …) by its numbering."""
    stems = [PurePosixPath(n).stem for n in names]
    if len(stems) < 2 or not all(s.isdigit() for s in stems):
        return
    numbers = sorted(int(s) for s in stems)
    steps = {b - a for a, b in itertools.pairwise(numbers)}
    if min(steps) >= ANNOTATED_STEP and all(step % ANNOTATED_STEP == 0 for step in steps):
        raise UserError(
            f"{archive}: video {video} has frames {stems[0]}, {stems[1]}, … (every "
            f"{ANNOTATED_STEP}th frame): this is the 6-fps annotated release; download "
            "train_all_frames.zip / test_all_frames.zip (the all-frames release) instead"
        )


def _check_not_jpeg(archive: Path, video: str, others: list[str]) -> None:
    """Refuse a video folder holding anything but JPEG frames (hidden files aside)."""
    if not others:
        return
    suffix = PurePosixPath(others[0]).suffix.lower().lstrip(".")
    shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
    kind = f"{suffix.upper()} frames" if suffix in _IMAGE_SUFFIXES else "files that are not frames"
    raise UserError(
        f"{archive}: video {video} has {kind}: {shown}; YouTube-VOS frames are JPEG "
        "(00000.jpg, 00001.jpg, …): convert them to JPEG or remove them"
    )


def _check_complete_run(archive: Path, video: str, names: list[str]) -> None:
    """Frames must be 00000, 00001, … with no gap and none twice (names sorted)."""
    stems = [PurePosixPath(n).stem for n in names]
    twice = sorted(s for s, n in Counter(stems).items() if n > 1)
    if twice:
        held = [n for n in names if PurePosixPath(n).stem == twice[0]]
        what = f"{held[0]} twice" if len(set(held)) == 1 else " and ".join(held)
        raise UserError(
            f"{archive}: video {video} holds frame {what}; a zip may repeat a name but a video"
            " cannot: the archive is damaged or was merged twice, re-download it"
        )
    for number, (name, stem) in enumerate(zip(names, stems, strict=True)):
        if stem == f"{number:05d}":
            continue
        if not (stem.isdigit() and len(stem) == 5):
            problem = f"has frame {name}, not a 5-digit frame number (00000.jpg, 00001.jpg, …)"
        elif number == 0:
            problem = f"starts at frame {name}, not 00000"
        else:
            problem = f"has no frame {number:05d} ({names[number - 1]} is followed by {name})"
        raise UserError(
            f"{archive}: video {video} {problem}; a YouTube-VOS video is a complete run of "
            "frames from 00000: re-download the archive or fix that video"
        )


class SourceArchive:
    """One release archive, read member by member through a single handle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise UserError(f"{path}: archive not found; run `dvc repro download` first") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(
                f"{path}: not a readable zip ({exc}); the file is truncated or damaged,"
                " re-download it"
            ) from None
        self.videos = self._group()

    def _group(self) -> dict[str, list[zipfile.ZipInfo]]:
        """Video id -> its frame members, sorted by name, each video checked; a video folder
        with no frames maps to []. Members outside ``JPEGImages/<video>/`` are ignored."""
        videos: dict[str, list[zipfile.ZipInfo]] = {}
        others: dict[str, list[str]] = {}
        for info in self._zip.infolist():
            check_member_name(self.path, info.filename)
            parts = PurePosixPath(info.filename).parts
            if info.is_dir():
                if len(parts) >= 2 and parts[-2] == "JPEGImages":
                    videos.setdefault(parts[-1], [])
            elif len(parts) >= 3 and parts[-3] == "JPEGImages":
                video = videos.setdefault(parts[-2], [])
                if is_jpeg_name(info.filename):
                    video.append(info)
                elif not parts[-1].startswith("."):  # .DS_Store and the like are not frames
                    others.setdefault(parts[-2], []).append(parts[-1])
        for video, infos in videos.items():
            infos.sort(key=lambda i: i.filename)
            names = [PurePosixPath(i.filename).name for i in infos]
            _check_not_jpeg(self.path, video, sorted(others.get(video, [])))
            _check_not_annotated(self.path, video, names)
            _check_complete_run(self.path, video, names)
        return dict(sorted(videos.items()))

    def check_lengths(self, minimum: int, why: str) -> None:
        """Refuse, naming every one, the videos with fewer than ``minimum`` frames."""
        short = [f"{v} ({len(i)} frame{'s' * (len(i) != 1)})" for v, i in self.videos.items()
                 if len(i) < minimum]  # fmt: skip
        if short:
            raise UserError(
                f"{self.path}: video{'s' * (len(short) > 1)} {', '.join(short)} "
                f"{'have' if len(short) > 1 else 'has'} fewer than {minimum} frames, {why}"
            )

    def fingerprint(self, video: str) -> str:
        """Hash of the video's member names, sizes and CRCs (from the central directory)."""
        blob = "\n".join(f"{i.filename}:{i.file_size}:{i.CRC}" for i in self.videos[video])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def verify(self, video: str) -> None:
        """Read every frame of ``video`` through its CRC check (nothing is kept)."""
        for info in self.videos[video]:
            self.read(info)

    def read(self, info: zipfile.ZipInfo) -> bytes:
        """Member bytes; a CRC error or a cut-off archive names the archive and member."""
        try:
            return self._zip.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as exc:
            raise UserError(
                f"{self.path}: member {info.filename} is damaged ({exc}); the archive is truncated"
                " or corrupt, re-download it"
            ) from None

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SourceArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
