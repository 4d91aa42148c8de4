"""Fetch one file from an HTTP(S) URL or a local path: resumable, retried, checked, atomic.

Used for the YouTube-VOS archives and the pretrained weights. A URL is downloaded into
``<partial_dir>/<name>.part`` (kept across interruptions and resumed with a Range request), checked
(size, sha256) and only then renamed to its final path, so the final path never holds partial or
wrong data. A local path is hard-linked when it is on the same filesystem (no 50 GB copy), else
copied with a progress bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from tqdm import tqdm

from e2fgvi.atomic import atomic_open
from e2fgvi.config import HttpParams, PretrainedFile
from e2fgvi.errors import UserError, write_error

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Network reads are smaller: a dropped connection loses the chunk being read, not more.
NET_CHUNK = 1 << 16
# OpenMMLab names checkpoints ``<name>-<first 8 hex digits of the file's sha256>.pth``.
NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")


class _RetryableError(Exception):
    """A transfer problem worth another try (dropped connection, 5xx, short body)."""


def is_url(location: str) -> bool:
    return urlparse(location).scheme in ("http", "https")


def name_hash_prefix(name: str) -> str:
    """The sha256 prefix a file name carries (OpenMMLab convention), or ''."""
    match = NAME_HASH.search(name)
    return match.group(1) if match else ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle, _bar(path.stat().st_size, f"sha256 {path.name}") as bar:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _bar(total: int | None, desc: str, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, mininterval=1)


def check_file(path: Path, label: str, sha256: str = "", size: int = 0, prefix: str = "") -> None:
    """Compare size and sha256 (or a sha256 prefix) with what params or the file name promise."""
    actual_size = path.stat().st_size
    if size and actual_size != size:
        raise UserError(f"{label}: size {actual_size} bytes, expected {size}; fetch it again")
    if sha256 or prefix:
        digest = sha256_file(path)
        if sha256 and digest != sha256.lower():
            raise UserError(f"{label}: sha256 {digest}, expected {sha256}; fetch it again")
        if prefix and not digest.startswith(prefix):
            raise UserError(
                f"{label}: sha256 {digest} does not start with {prefix} (from its name)"
            )


def place_local(
    source: Path, dest: Path, sha256: str = "", size: int = 0, prefix: str = ""
) -> None:
    """Hard-link (same filesystem) or copy ``source`` to ``dest`` after checking it."""
    if not source.is_file():
        raise UserError(f"{source}: file not found; fix the location in params.yaml")
    check_file(source, str(source), sha256, size, prefix)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(source, dest):
        return  # already in place (e.g. a hard link from an earlier run); never unlink the source
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        os.link(source, dest)
        log.info("%s: hard-linked from %s", dest, source)
        return
    except OSError as exc:
        total = source.stat().st_size
        log.warning(
            "%s: cannot hard-link %s (%s); copying it needs %.1f GB more disk: put data/raw on "
            "the archive's filesystem to keep one copy",
            dest, source, exc.strerror, total / 1e9,
        )  # fmt: skip
    with open(source, "rb") as src, atomic_open(dest) as out, _bar(total, source.name) as bar:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))


def _transfer(session: requests.Session, url: str, part: Path, timeout: float) -> None:
    """One attempt: append to ``part`` from its current size; raise _RetryableError on a cut."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        # 416: nothing to send after offset, so the part is complete or longer than the file.
        if response.status_code == 416:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return
            part.unlink()
            raise _RetryableError("server refused the resume range; restarting from zero")
        if response.status_code >= 500:
            raise _RetryableError(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise UserError(f"{url}: HTTP {response.status_code}; check the URL in params.yaml")
        if offset and response.status_code != 206:
            log.warning("%s: server ignores Range requests; restarting from zero", url)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        try:
            with open(part, "ab" if offset else "wb") as out, _bar(total, part.name, offset) as bar:
                for chunk in response.iter_content(NET_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _RetryableError(f"connection dropped ({exc.__class__.__name__})") from None
        except OSError as exc:  # full disk, read-only: what arrived stays for the rerun to resume
            raise write_error(exc, part) or exc from None
    if total is not None and part.stat().st_size < total:
        raise _RetryableError(f"got {part.stat().st_size} of {total} bytes")


def download_url(url: str, part: Path, http: HttpParams) -> None:
    """Download ``url`` into ``part`` with resume and exponential backoff between tries."""
    part.parent.mkdir(parents=True, exist_ok=True)
    with requests.Session() as session:
        for attempt in range(http.retries + 1):
            try:
                _transfer(session, url, part, http.timeout_s)
                return
            except (_RetryableError, requests.ConnectionError, requests.Timeout) as exc:
                if attempt == http.retries:
                    raise UserError(
                        f"{url}: download failed after {attempt + 1} tries ({exc}); the partial"
                        f" file {part} is kept, rerun to resume"
                    ) from None
                wait = http.backoff_s * 2**attempt
                log.warning(
                    "%s: %s; retry %d/%d in %.1f s", url, exc, attempt + 1, http.retries, wait
                )
                time.sleep(wait)


def _move_into_place(part: Path, dest: Path) -> None:
    """Rename ``part`` to ``dest``; across filesystems copy to a temp sibling of dest first."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(part, dest)
    except OSError:
        with open(part, "rb") as src, atomic_open(dest) as out:
            shutil.copyfileobj(src, out, CHUNK)
        part.unlink()


def fetch(
    location: str,
    dest: Path,
    http: HttpParams,
    partial_dir: Path,
    *,
    sha256: str = "",
    size: int = 0,
    prefix: str = "",
) -> None:
    """Put the file at ``location`` (URL, file:// URL or local path) at ``dest``, checked."""
    if not is_url(location):
        path = unquote(urlparse(location).path) if location.startswith("file://") else location
        place_local(Path(path).expanduser(), dest, sha256, size, prefix)
        return
    part = partial_dir / f"{dest.name}.part"
    download_url(location, part, http)
    try:
        check_file(part, location, sha256, size, prefix)
    except UserError:
        part.unlink()  # wrong data must not be resumed from
        raise
    _move_into_place(part, dest)
    log.info("%s: downloaded from %s", dest, location)


def fetch_weight(
    key: str, item: PretrainedFile, dest: Path, http: HttpParams, partial_dir: Path
) -> dict[str, object]:
    """Fetch one pretrained file to ``dest`` (a path from dvc.yaml); returns its manifest entry."""
    name = Path(unquote(urlparse(item.url).path)).name
    entry: dict[str, object] = {"file": dest.name, "url": item.url, "fetched": False}
    if not item.fetch:
        entry["note"] = f"skipped: data.pretrained.{key}.fetch is false in params.yaml"
        return entry
    if not name:
        raise UserError(f"params.yaml data.pretrained.{key}.url is empty: set a URL or local path")
    # Without a sha256 param, an OpenMMLab-style name still promises the hash's first digits.
    prefix = "" if item.sha256 else name_hash_prefix(name)
    fetch(item.url, dest, http, partial_dir, sha256=item.sha256, prefix=prefix)
    entry.update(fetched=True, sha256=sha256_file(dest), bytes=dest.stat().st_size)
    return entry


def _dvc_cache_settings(repo: Path) -> dict[str, str]:
    """``cache.dir`` and ``cache.type`` from .dvc/config and .dvc/config.local (local wins)."""
    found: dict[str, str] = {}
    for name in ("config", "config.local"):
        section = ""
        with contextlib.suppress(FileNotFoundError):
            for line in (repo / ".dvc" / name).read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]").strip()
                elif section == "cache" and "=" in line and not line.startswith("#"):
                    key, value = (part.strip() for part in line.split("=", 1))
                    found[key] = value
    return found


def warn_if_cache_copies(folder: Path, repo: Path) -> str | None:
    """One warning line when DVC's cache would hold a second full copy of ``folder``, else None."""
    settings = _dvc_cache_settings(repo)
    cache = repo / ".dvc" / settings.get("dir", "cache")
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e9
    types = [t.strip() for t in settings.get("type", "copy").split(",")]
    if not {"hardlink", "reflink", "symlink"} & set(types):
        why = f"cache.type is {settings.get('type', 'unset (copy)')}"
    elif "hardlink" in types and cache.exists() and cache.stat().st_dev != folder.stat().st_dev:
        why = f"the cache {cache} is on another filesystem than {folder}"
    else:
        return None
    line = (
        f"DVC will copy {folder} into its cache ({why}): about {size:.1f} GB more disk, and as "
        f"much again for the prepared data; `dvc config cache.type hardlink,copy` with the "
        f"cache on this filesystem (`dvc cache dir`) keeps one copy (docs/data.md, Disk)"
    )
    log.warning(line)
    return line
