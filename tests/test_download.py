"""The downloader against a real HTTP server on 127.0.0.1, and local placement of archives."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from e2fgvi.config import HttpParams, PretrainedFile
from e2fgvi.data import download
from e2fgvi.data.download import (
    fetch,
    fetch_weight,
    name_hash_prefix,
    place_local,
    warn_if_cache_copies,
)
from e2fgvi.errors import UserError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = HttpParams(retries=3, backoff_s=0.0, timeout_s=5.0)


class Handler(BaseHTTPRequestHandler):
    """Serves server.payload; Range support and failures are switched on the server object."""

    def do_GET(self):
        server = self.server
        server.ranges.append(self.headers.get("Range"))
        if self.path != "/file.zip":
            self.send_error(404)
            return
        if server.errors_5xx > 0:
            server.errors_5xx -= 1
            self.send_error(503)
            return
        if server.stalls > 0:
            server.stalls -= 1
            time.sleep(0.6)
        payload, start = server.payload, 0
        wanted = self.headers.get("Range")
        if wanted and server.honour_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(payload):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(payload)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drops > 0:  # send a part of the body, then cut the connection
            server.drops -= 1
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.payload, httpd.ranges = PAYLOAD, []
    httpd.honour_range, httpd.drops, httpd.errors_5xx, httpd.stalls = True, 0, 0, 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/file.zip"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _fetch(server, tmp_path, http=FAST, **checks):
    dest = tmp_path / "out" / "train_all_frames.zip"
    fetch(server.url, dest, http, tmp_path / "partial", **checks)
    return dest


def test_plain_download_with_checksum(server, tmp_path):
    dest = _fetch(server, tmp_path, sha256=SHA, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert list((tmp_path / "partial").iterdir()) == []
    assert server.ranges == [None]


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.drops = 2
    dest = _fetch(server, tmp_path, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges[0] is None and len(server.ranges) == 3
    # Resumed near where each cut left off (the chunk being read when it dropped is lost).
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in server.ranges[1:]]
    first_cut = len(PAYLOAD) // 3
    assert first_cut - download.NET_CHUNK < offsets[0] <= first_cut
    assert offsets[1] > offsets[0]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.honour_range, server.drops = False, 1
    dest = _fetch(server, tmp_path, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges[1] is not None  # it asked for a range, got 200, and rewrote from zero


def test_resume_from_a_part_left_by_an_earlier_run(server, tmp_path):
    part = tmp_path / "partial" / "train_all_frames.zip.part"
    part.parent.mkdir()
    part.write_bytes(PAYLOAD[:1000])
    assert _fetch(server, tmp_path).read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-"]


def test_complete_part_gets_416_and_is_accepted(server, tmp_path):
    part = tmp_path / "partial" / "train_all_frames.zip.part"
    part.parent.mkdir()
    part.write_bytes(PAYLOAD)
    assert _fetch(server, tmp_path, sha256=SHA).read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_checksum_mismatch_fails_and_leaves_nothing(server, tmp_path):
    with pytest.raises(UserError, match=rf"file\.zip: sha256 {SHA}, expected 0+; fetch it again"):
        _fetch(server, tmp_path, sha256="0" * 64)
    assert not (tmp_path / "out" / "train_all_frames.zip").exists()
    assert list((tmp_path / "partial").iterdir()) == []  # a wrong file is not resumed from
    with pytest.raises(UserError, match="size 1048580 bytes, expected 5"):
        _fetch(server, tmp_path, size=5)


def test_5xx_and_timeouts_are_retried(server, tmp_path):
    server.errors_5xx, server.stalls = 2, 1
    http = HttpParams(retries=3, backoff_s=0.0, timeout_s=0.3)
    assert _fetch(server, tmp_path, http=http).read_bytes() == PAYLOAD
    assert len(server.ranges) == 4


def test_backoff_is_exponential(server, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(download.time, "sleep", waits.append)
    server.errors_5xx = 3
    _fetch(server, tmp_path, http=HttpParams(retries=3, backoff_s=0.5, timeout_s=5.0))
    assert waits == [0.5, 1.0, 2.0]


def test_giving_up_keeps_the_part_for_a_later_resume(server, tmp_path):
    server.drops = 10
    with pytest.raises(UserError, match=r"failed after 2 tries.*partial file .* is kept"):
        _fetch(server, tmp_path, http=HttpParams(retries=1, backoff_s=0.0, timeout_s=5.0))
    part = tmp_path / "partial" / "train_all_frames.zip.part"
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD) and not (tmp_path / "out" / "train_all_frames.zip").exists()
    server.drops = 0
    assert _fetch(server, tmp_path, sha256=SHA).read_bytes() == PAYLOAD
    assert server.ranges[-1] == f"bytes={kept}-"


def test_404_is_not_retried(server, tmp_path):
    dest = tmp_path / "x.zip"
    with pytest.raises(UserError, match="HTTP 404; check the URL"):
        fetch(server.url.replace("file.zip", "nope.zip"), dest, FAST, tmp_path / "p")
    assert len(server.ranges) == 1 and not dest.exists()


def test_local_file_is_hard_linked_and_checked(tmp_path):
    source = tmp_path / "downloads" / "train_all_frames.zip"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "raw" / "train_all_frames.zip"
    place_local(source, dest, sha256=SHA, size=len(PAYLOAD))
    assert os.stat(dest).st_ino == os.stat(source).st_ino
    place_local(source, dest)  # already the same file: kept, the source is never unlinked
    assert source.read_bytes() == PAYLOAD
    with pytest.raises(UserError, match="expected 7; fetch it again"):
        place_local(source, tmp_path / "other.zip", size=7)
    with pytest.raises(UserError, match="file not found; fix the location"):
        place_local(tmp_path / "missing.zip", dest)


def test_local_file_is_copied_across_filesystems(tmp_path, monkeypatch):
    source = tmp_path / "a.zip"
    source.write_bytes(PAYLOAD)

    def cross_device(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(download.os, "link", cross_device)
    dest = tmp_path / "raw" / "a.zip"
    fetch(f"file://{source}", dest, FAST, tmp_path / "p")
    assert dest.read_bytes() == PAYLOAD and os.stat(dest).st_ino != os.stat(source).st_ino


def test_name_hash_prefix():
    assert name_hash_prefix("spynet_20210409-c6c1bd09.pth") == "c6c1bd09"
    assert name_hash_prefix("rgb_imagenet.pt") == ""


def test_pretrained_checks_the_hash_in_its_name(tmp_path):
    good = tmp_path / f"weights-{SHA[:8]}.pth"
    good.write_bytes(PAYLOAD)
    bad = tmp_path / "weights-deadbeef.pth"
    bad.write_bytes(PAYLOAD)
    out = tmp_path / "pretrained"
    dest = out / good.name
    entry = fetch_weight("spynet", PretrainedFile(fetch=True, url=str(good)), dest, FAST, tmp_path)
    expected = {"file": good.name, "url": str(good), "fetched": True, "sha256": SHA}
    assert entry == {**expected, "bytes": len(PAYLOAD)}
    assert (out / good.name).read_bytes() == PAYLOAD
    with pytest.raises(UserError, match="does not start with deadbeef"):
        fetch_weight("spynet", PretrainedFile(fetch=True, url=str(bad)), dest, FAST, tmp_path)


def test_pretrained_over_http_and_skipped(server, tmp_path):
    item = PretrainedFile(fetch=True, url=server.url, sha256=SHA)
    entry = fetch_weight("i3d", item, tmp_path / "w" / "file.zip", FAST, tmp_path / "p")
    assert entry["fetched"] and (tmp_path / "w" / "file.zip").read_bytes() == PAYLOAD
    skipped = fetch_weight(
        "i3d", PretrainedFile(url=server.url), tmp_path / "s" / "f", FAST, tmp_path
    )
    assert skipped["fetched"] is False and "fetch is false" in skipped["note"]
    assert not (tmp_path / "s").exists()


def test_a_full_disk_is_one_line_and_keeps_the_partial_download_for_the_rerun(server, tmp_path):
    """The partial folder on a real 64 KiB tmpfs: the ~1 MiB download stops with one line naming
    the .part file, which stays (resumable); nothing appears at the final path."""
    from _confined import python, run_confined

    code = (
        "import sys\nfrom pathlib import Path\nfrom e2fgvi.config import HttpParams\n"
        "from e2fgvi.data.download import fetch\nfrom e2fgvi.errors import UserError\n"
        "try:\n    fetch(sys.argv[1], Path(sys.argv[2]), HttpParams(retries=0, timeout_s=5.0),"
        " Path(sys.argv[3]))\nexcept UserError as exc:\n    print(exc)\n    sys.exit(2)\n"
    )
    dest, partial = tmp_path / "out" / "train_all_frames.zip", tmp_path / "partial"
    done = run_confined(
        python("-c", code, server.url, str(dest), str(partial)), full={partial: 65536}
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout.strip() == (
        f"{partial / 'train_all_frames.zip.part'}: no space left on the device; free some space"
        " there, then rerun"
    )
    assert done.files[partial] == ["train_all_frames.zip.part"] and not dest.exists()


def test_a_second_copy_in_the_dvc_cache_is_one_warning_with_the_disk_it_takes(tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "train_all_frames.zip").write_bytes(b"x" * 3_000_000)
    (tmp_path / ".dvc" / "cache").mkdir(parents=True)
    config = tmp_path / ".dvc" / "config"
    config.write_text("[core]\n    analytics = false\n")  # cache.type unset: DVC copies
    line = warn_if_cache_copies(raw, tmp_path)
    assert line is not None and "about 0.0 GB more disk" in line and "cache.type is unset" in line
    config.write_text("[cache]\n    type = hardlink,copy\n")
    assert warn_if_cache_copies(raw, tmp_path) is None
    (tmp_path / ".dvc" / "config.local").write_text("[cache]\n    type = copy\n")
    assert "cache.type is copy" in warn_if_cache_copies(raw, tmp_path)


def test_the_project_links_the_dvc_cache_by_default():
    root = Path(__file__).resolve().parents[1]
    assert warn_if_cache_copies(root / "src", root) is None
