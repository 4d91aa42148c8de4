"""Atomic writes: complete file or the old one, usual permissions, no temporary left behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from e2fgvi import atomic
from e2fgvi.atomic import atomic_open, write_json, write_text
from e2fgvi.errors import UserError


def test_write_replaces_whole_file_with_usual_mode(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json(path, {"b": 1, "a": 2})
    assert json.loads(path.read_text()) == {"a": 2, "b": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failure_keeps_old_content(tmp_path):
    path = tmp_path / "x.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_open(path, "w") as handle:
        handle.write("partial")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_nan_is_refused(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()


# --------------------------------------------------------------------------- real faults
# Each case runs in a child process under a real fault (tests/_confined.py): a tmpfs too small
# for the file, a read-only bind mount, a 0555 folder for a root without its override powers.

_WRITE_OVER_OLD = """
import sys
from e2fgvi.atomic import write_bytes
from e2fgvi.errors import UserError
try:
    write_bytes(sys.argv[1], b"x" * int(sys.argv[2]))
except UserError as exc:
    print(exc)
    sys.exit(2)
"""


def _old_file(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.bin").write_bytes(b"old")
    return folder / "x.bin"


def test_full_disk_is_one_line_and_leaves_the_old_file_and_no_temporary(tmp_path):
    from _confined import python, run_confined

    disk = tmp_path / "disk"
    setup = "open(sys.argv[1], 'wb').write(b'old')\n"  # the tmpfs starts empty: make the old file
    code = "import sys\n" + setup + _WRITE_OVER_OLD
    done = run_confined(python("-c", code, str(disk / "x.bin"), str(1 << 20)), full={disk: 65536})
    assert done.returncode == 2, done.stderr
    assert (
        done.stdout.strip() == f"{disk / 'x.bin'}: no space left on the device; free some"
        " space there, then rerun"
    )
    assert done.files[disk] == ["x.bin"]  # the old file, no .x.bin.*.tmp


def test_read_only_folder_is_one_line_and_keeps_the_old_file(tmp_path):
    from _confined import python, run_confined

    path = _old_file(tmp_path / "ro")
    done = run_confined(python("-c", _WRITE_OVER_OLD, str(path), "10"), read_only=(path.parent,))
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip().startswith(f"{path}: the file system is read-only; make it writable")
    assert path.read_bytes() == b"old" and sorted(os.listdir(path.parent)) == ["x.bin"]


def test_folder_without_write_permission_is_one_line_also_for_root(tmp_path):
    from _confined import python, run_confined

    path = _old_file(tmp_path / "closed")
    path.parent.chmod(0o555)
    try:
        done = run_confined(python("-c", _WRITE_OVER_OLD, str(path), "10"), no_override=True)
    finally:
        path.parent.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip().startswith(f"{path}: permission denied; give this user access")
    assert path.read_bytes() == b"old" and sorted(os.listdir(path.parent)) == ["x.bin"]


def test_a_file_where_the_folder_must_be_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="a file stands where a folder must be"):
        write_text(tmp_path / "file" / "x.txt", "x")


def test_atomic_path_gives_usual_mode_and_cleans_up(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with atomic.atomic_path(tmp_path / "v.mp4") as tmp:
        tmp.write_bytes(b"video")
        assert tmp.parent == tmp_path and tmp.name.startswith(".v.mp4.")
    assert stat.S_IMODE((tmp_path / "v.mp4").stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "w.mp4") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("encoder died")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    out = tmp_path / "frames"
    out.mkdir()
    for i in range(5):
        (out / f"{i:05d}.png").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_dir(out) as staging:
        (staging / "00000.png").write_bytes(b"new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(5)]
    with atomic.atomic_dir(out) as staging:
        for i in range(2):
            (staging / f"{i:05d}.png").write_bytes(b"new")
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png"]  # no stale frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
