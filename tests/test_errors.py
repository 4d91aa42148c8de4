"""One-line errors: cut between words, never inside one; disk and permission errors named."""

from __future__ import annotations

import errno
import re

import pytest
import torch

from e2fgvi.errors import UserError, clip, write_error
from e2fgvi.weights import read_weights


def test_clip_keeps_short_text_and_cuts_long_text_between_words():
    assert clip("a  short\nmessage") == "a short message"
    text = "word " * 60
    cut = clip(text, 50)
    assert len(cut) <= 50 and cut.endswith("…") and cut[:-1] == "word " * 9 + "word"
    assert clip("x" * 300, 40) == "x" * 39 + "…"  # one endless word: cut it, marked


def _is_cut_between_words(shown: str, original: str) -> bool:
    """``shown`` is ``original`` whole, or a prefix of it ending at a word end, plus '…'."""
    flat = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", original).split())  # colour codes dropped
    if shown == flat:
        return True
    head = shown.removesuffix("…")
    return shown.endswith("…") and flat.startswith(head) and not flat[len(head)].isalnum()


def test_a_refused_pickle_is_named_without_a_word_cut_in_half(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UserError) as info:
        read_weights(path)
    message = str(info.value)
    reason = re.search(r"unpickled: (.*)\); use an official", message).group(1)
    try:
        torch.load(path, weights_only=True)
    except Exception as exc:
        original = str(exc).strip().splitlines()[0]
    assert len(original) > 120  # long enough that it must be shortened
    assert _is_cut_between_words(reason, original), (reason, original)


def test_a_damaged_weights_file_is_named_without_a_word_cut_in_half(tmp_path):
    path = tmp_path / "broken.pth"
    torch.save({"w": torch.zeros(4)}, path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(UserError) as info:
        read_weights(path)
    inner = re.search(r"weights file \((.*)\)$", str(info.value)).group(1)
    try:
        torch.load(path, weights_only=True)
    except Exception as exc:
        original = str(exc)
    assert _is_cut_between_words(inner, original), (inner, original)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_write_errors_name_the_path_and_what_to_do(code, words):
    problem = write_error(OSError(code, "x", "/data/out/.f.tmp"), "/data/out/f")
    assert str(problem).startswith(f"/data/out/f: {words}") and "then rerun" in str(problem)
    assert write_error(OSError(errno.EIO, "x")) is None


def test_the_entry_points_net_turns_only_disk_errors_into_one_line(caplog):
    """A disk or permission OSError nobody translated is one line (status 1); another OSError
    keeps its traceback, since its meaning depends on where it came from."""
    import argparse

    from e2fgvi.entry import invoke

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/x.pth")

    assert invoke(full, argparse.Namespace()) == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "/data/run/x.pth: no space left on the device; free some space there, then rerun"
    ]

    def exists(args):
        raise FileExistsError(errno.EEXIST, "File exists", "/data/run")

    with pytest.raises(FileExistsError):
        invoke(exists, argparse.Namespace())
