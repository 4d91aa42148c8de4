"""The one exception type users see: a problem they can fix, explained in one line."""

from __future__ import annotations

import errno
import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes some libraries put in errors

# What to do when the place a file goes cannot take it, by the OSError's errno.
_WRITE_FIXES = {
    errno.ENOSPC: "no space left on the device; free some space there, then rerun",
    errno.EDQUOT: "disk quota exceeded; free some space or raise the quota, then rerun",
    errno.EROFS: "the file system is read-only; make it writable (or mount it read-write), "
    "then rerun",
    errno.EACCES: "permission denied; give this user access to it (chmod/chown), then rerun",
    errno.EPERM: "operation not permitted; give this user access to it (chmod/chown, "
    "chattr -i), then rerun",
    errno.ENOTDIR: "a file stands where a folder must be; move that file away or choose "
    "another path",
    errno.EEXIST: "a file stands where a folder must be; move that file away or choose "
    "another path",
    errno.EISDIR: "a folder stands where the file must be; move that folder away or choose "
    "another path",
}


# The ones that mean the same wherever they come from (a full, read-only or closed place).
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


# Exit statuses: a refusal at run time (a UserError) is 1; 2 is argparse's, for a usage error.
REFUSED = 1
USAGE = 2


class UserError(Exception):
    """Bad input or environment; ``str(exc)`` names the file/key and what to do.

    Entry points catch it, log the line without a stack trace and exit with status ``REFUSED``.
    """


def one_line(exc: UserError) -> str:
    """The user's line, also when a DataLoader worker re-raised it with its traceback attached."""
    text = str(exc).strip()
    if "Original Traceback" in text:  # torch's ExceptionWrapper: the last line is the original
        text = text.splitlines()[-1].removeprefix(f"{UserError.__module__}.UserError: ")
    return text


def first_problem(exc: Exception, top: str) -> str:
    """'<dotted key>: <message>' of a pydantic ``ValidationError``'s first error (``top`` when
    the error is about the whole object)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or top
    return f"{where}: {first['msg']}"


def clip(text: object, limit: int = 160) -> str:
    """``text`` on one line, at most ``limit`` characters, cut between words and marked '…'."""
    flat = " ".join(_ANSI.sub("", str(text)).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    # Cut back to a word boundary unless the cut already ends a word, or the only boundary is
    # far back (one endless word: cut inside it, marked).
    if flat[limit - 1] != " " and space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.") + "…"


def write_error(exc: OSError, path: str | Path | None = None) -> UserError | None:
    """One line for an OSError that says the place a file goes cannot take it, else None.

    ``path`` names the file when the error itself names none or only a temporary file.
    """
    fix = _WRITE_FIXES.get(exc.errno or 0)
    if fix is None:
        return None
    where = path if path is not None else exc.filename
    return UserError(f"{where}: {fix}" if where is not None else fix[0].upper() + fix[1:])


def disk_error(exc: OSError) -> UserError | None:
    """``write_error`` for a full disk, a read-only file system or a missing permission only
    (the entry points' safety net: other errnos need their context to be explained)."""
    return write_error(exc) if exc.errno in _DISK_ERRNOS else None
