"""Frames shared by prepare and training: JPEG decoding, the official resize, per-video zips and
the JSON index (docs/official-e2fgvi.md §2.1)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from e2fgvi.atomic import atomic_open
from e2fgvi.errors import UserError

JPEG_SUFFIXES = (".jpg", ".jpeg")
# libjpeg's DCT-domain downscaling: decode at 1/2, 1/4 or 1/8 of the size, much faster.
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip
# Zip metadata fixed so that the same content gives the same bytes on every machine.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
UNIX = 3


def is_jpeg_name(name: str) -> bool:
    """True for a JPEG member name (case-insensitive suffix), False for folders and other files."""
    return name.lower().endswith(JPEG_SUFFIXES)


def reduction_for(data: bytes, at_least: tuple[int, int], where: str) -> int:
    """The largest of 1, 2, 4, 8 by which this JPEG can shrink and still be >= ``at_least``.

    ``at_least`` is (width, height); the source size comes from the JPEG header alone.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError):
        raise UserError(f"{where}: JPEG does not decode (corrupt); re-download it") from None
    factor = 1
    while factor < 8 and width >= 2 * factor * at_least[0] and height >= 2 * factor * at_least[1]:
        factor *= 2
    return factor


def decode_jpeg(data: bytes, where: str, reduction: int = 1) -> np.ndarray:
    """Decode JPEG bytes to RGB uint8 (H, W, 3); ``where`` names the file in the error.

    ``reduction`` 2, 4 or 8 decodes at that fraction of the size (ceil(W / r) x ceil(H / r)).
    """
    # libjpeg returns a partly grey image for a truncated file and only warns, so check that the
    # data starts with SOI and ends with EOI (trailing zero padding allowed) before decoding.
    if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise UserError(f"{where}: not a complete JPEG (corrupt or truncated); re-download it")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[reduction])
    if bgr is None:
        raise UserError(f"{where}: JPEG does not decode (corrupt); re-download it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize like the official loader: PIL bicubic to (width, height), aspect not kept."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))


def resize_area(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize with OpenCV's area filter to (width, height): faster than PIL's widening bicubic,
    not the official pixels (the loader's ``decode: reduced_area``)."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def deterministic_zipinfo(name: str) -> zipfile.ZipInfo:
    """ZipInfo with a fixed timestamp, creator and permissions (folders end with '/')."""
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.create_system = UNIX
    info.compress_type = zipfile.ZIP_STORED
    if name.endswith("/"):
        info.external_attr = (0o40755 << 16) | 0x10  # unix dir mode + MS-DOS directory flag
    else:
        info.external_attr = 0o100644 << 16
    return info


def write_zip(path: Path, members: Iterable[tuple[str, bytes]], comment: bytes = b"") -> None:
    """An uncompressed zip of (name, bytes) in the given order, written atomically; the same
    members give the same bytes on every machine (``deterministic_zipinfo``)."""
    with atomic_open(path) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as out:
        for name, data in members:
            out.writestr(deterministic_zipinfo(name), data)
        out.comment = comment


class VideoZip:
    """Frames of one video, read from its zip through ONE open handle (one per DataLoader worker).

    The handle opens lazily and is not pickled, so an instance built in the main process can be
    sent to worker processes; each worker then opens its own handle on first read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        # prepare refuses videos of mixed frame sizes: one reduction per clip size serves all
        self._reductions: dict[tuple[int, int], int] = {}
        self.names: list[str] = sorted(n for n in self._handle().namelist() if is_jpeg_name(n))

    def _handle(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except FileNotFoundError:
                raise UserError(
                    f"{self.path}: video zip not found; run `dvc repro prepare`"
                ) from None
            except (zipfile.BadZipFile, OSError) as exc:
                raise UserError(f"{self.path}: not a readable zip ({exc}); rerun prepare") from None
        return self._zip

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int, at_least: tuple[int, int] | None = None) -> np.ndarray:
        """Frame ``index`` (position in the sorted member list) as RGB uint8 (H, W, 3).

        With ``at_least`` (width, height) the JPEG is decoded at 1/2, 1/4 or 1/8 of its size
        where the result stays at least that large (``reduction_for``); else at full size.
        """
        if not 0 <= index < len(self.names):
            raise UserError(
                f"{self.path}: frame {index} requested but the zip holds {len(self.names)} frames;"
                " the JSON index disagrees with the zip, rerun `dvc repro prepare`"
            )
        name = self.names[index]
        try:
            data = self._handle().read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UserError(
                f"{self.path}: member {name} is damaged ({exc}); rerun prepare"
            ) from None
        where = f"{self.path}: member {name}"
        reduction = 1
        if at_least is not None:
            if at_least not in self._reductions:
                self._reductions[at_least] = reduction_for(data, at_least, where)
            reduction = self._reductions[at_least]
        return decode_jpeg(data, where, reduction)

    def read_many(
        self, indices: Sequence[int], at_least: tuple[int, int] | None = None
    ) -> list[np.ndarray]:
        """Frames at ``indices``, in that order (``at_least``: see ``read``)."""
        return [self.read(int(i), at_least) for i in indices]

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> VideoZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_zip": None}


def load_index(json_path: str | Path) -> dict[str, int]:
    """Read train.json / test.json: one flat object, video id -> frame count (official format)."""
    path = Path(json_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: index not found; run `dvc repro prepare`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); rerun `dvc repro prepare`") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected one JSON object mapping video id -> frame count")
    for video, count in raw.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UserError(f"{path}: video {video!r} has frame count {count!r}; expected int >= 1")
    return dict(raw)


def check_index(index: dict[str, int], json_path: Path, frames_dir: Path) -> None:
    """Every indexed video has a zip in ``frames_dir`` holding exactly its count of frames.

    A count above the zip's frames is the official code's ``IndexError`` (E2FGVI issue #51).
    """
    for video, count in index.items():
        path = frames_dir / f"{video}.zip"
        try:
            with zipfile.ZipFile(path) as archive:
                held = sum(is_jpeg_name(n) for n in archive.namelist())
        except FileNotFoundError:
            raise UserError(f"{json_path}: video {video} has no {path}; rerun prepare") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(f"{path}: not a readable zip ({exc}); rerun prepare") from None
        if held != count:
            raise UserError(
                f"{json_path}: video {video} has {count} frames but {path} holds {held};"
                " regenerate the index with `dvc repro prepare` (do not mix in another train.json)"
            )
