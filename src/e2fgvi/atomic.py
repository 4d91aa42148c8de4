"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Every write goes to a temporary sibling (same folder, so the final rename is atomic), is flushed
and fsynced, and only then renamed over the target. On any failure the temporary file is removed
and the target stays as it was; a full disk, a read-only folder or a missing permission becomes
one line naming the target and what to do (``e2fgvi.errors.write_error``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from e2fgvi.errors import write_error

_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file
DIR_MODE = 0o777 & ~_UMASK  # what mkdir() would give a new folder


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, exc.filename or path.parent) or exc from None


def _ours(exc: BaseException, *places: Path) -> bool:
    """True for an OSError about no file (a write on a handle) or about one of ``places``
    (a folder counts with everything in it)."""
    if not isinstance(exc, OSError):
        return False
    if exc.filename is None:
        return True
    named = Path(exc.filename)
    return any(named == place or place in named.parents for place in places)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write by name; renamed over ``path`` on success.

    For writers that take a file name (video encoders); ``atomic_open`` wraps it for handles.
    The file gets the usual permissions (umask), not the 0600 of ``mkstemp``.
    """
    path = Path(path)
    _make_parent(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) or exc from None
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, FILE_MODE)
        yield tmp
        with open(tmp, "rb") as done:  # the writer may have closed its own handle: sync by name
            os.fsync(done.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if _ours(exc, tmp, path) and (problem := write_error(exc, path)) is not None:
            raise problem from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty, key-sorted JSON (stable diffs for DVC metrics)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def make_dir(path: str | Path) -> Path:
    """``mkdir -p`` whose failure (read-only, full, a file in the way) is one line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, exc.filename or path) or exc from None
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh hidden sibling folder to fill; on success it replaces ``path`` as a whole.

    A reader sees the old folder or the complete new one (for a moment, between the two renames,
    none); on failure the sibling is removed and ``path`` stays as it was.
    """
    path = Path(path)
    _make_parent(path)
    staging = path.parent / f".{path.name}.partial"
    old = path.parent / f".{path.name}.old"
    try:
        for leftover in (staging, old):
            shutil.rmtree(leftover, ignore_errors=True)
        staging.mkdir(mode=DIR_MODE)
    except OSError as exc:
        raise write_error(exc, path) or exc from None
    try:
        yield staging
        _fsync_dir(staging)
        if path.exists():
            os.replace(path, old)
        os.replace(staging, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        if _ours(exc, staging, path) and (problem := write_error(exc, path)) is not None:
            raise problem from None
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
