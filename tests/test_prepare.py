"""prepare: release archives -> per-video zips + JSON index, with its validations."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
from _archives import jpeg, make_release

from e2fgvi.config import PrepareParams
from e2fgvi.data import prepare as prepare_module
from e2fgvi.data.archive import SourceArchive, check_member_name, deterministic_zipinfo
from e2fgvi.data.frames import VideoZip, load_index
from e2fgvi.data.prepare import prepare_dataset
from e2fgvi.errors import UserError

KEEP = PrepareParams(resize=[], verify_jpeg=True)
SMALL = PrepareParams(resize=[16, 12], jpeg_quality=90, verify_jpeg=True)


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    make_release(folder / "train_all_frames.zip", "train_all_frames", {"aaa": 5, "bbb": 3})
    make_release(folder / "test_all_frames.zip", "test_all_frames", {"ccc": 4}, size=(40, 20))
    return folder


def test_layout_index_and_report(raw, tmp_path):
    out = tmp_path / "yv"
    report = prepare_dataset(raw, out, KEEP)
    assert load_index(out / "train.json") == {"aaa": 5, "bbb": 3}
    assert load_index(out / "test.json") == {"ccc": 4}
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == [
        "aaa.zip",
        "bbb.zip",
        "ccc.zip",
    ]
    with zipfile.ZipFile(out / "JPEGImages" / "aaa.zip") as z:
        assert z.namelist() == [f"{i:05d}.jpg" for i in range(5)]  # at the root, sorted
        with zipfile.ZipFile(raw / "train_all_frames.zip") as src:
            assert z.read("00003.jpg") == src.read("train_all_frames/JPEGImages/aaa/00003.jpg")
    assert report["train"]["videos"] == 2 and report["train"]["frames"] == 8
    assert report["test"]["resolutions"] == {"40x20": 1}
    assert report["test"]["min_frames"] == report["test"]["max_frames"] == 4
    assert report["output_resolution"] == "original"
    assert report["train"]["bytes_out"] > 0 and report["train"]["bytes_in"] > 0


def test_resize_writes_small_frames(raw, tmp_path):
    out = tmp_path / "yv"
    report = prepare_dataset(raw, out, SMALL)
    frame = VideoZip(out / "JPEGImages" / "ccc.zip").read(2)
    assert frame.shape == (12, 16, 3)
    assert report["test"]["resolutions"] == {"40x20": 1}  # the source resolution
    assert report["output_resolution"] == "16x12"


def test_rerun_keeps_finished_videos_and_recovers_from_an_interruption(raw, tmp_path, monkeypatch):
    out = tmp_path / "yv"
    real = prepare_module._convert
    calls = {"n": 0}

    def dies_on_the_second_video(data, where, cfg):
        calls["n"] += 1
        if "bbb" in where:
            raise KeyboardInterrupt
        return real(data, where, cfg)

    monkeypatch.setattr(prepare_module, "_convert", dies_on_the_second_video)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, out, KEEP)
    done = out / "JPEGImages" / "aaa.zip"
    assert done.exists() and not (out / "JPEGImages" / "bbb.zip").exists()
    assert not any(p.name.endswith(".tmp") for p in (out / "JPEGImages").iterdir())
    stamp = done.stat().st_mtime_ns
    monkeypatch.setattr(prepare_module, "_convert", real)
    prepare_dataset(raw, out, KEEP)
    assert done.stat().st_mtime_ns == stamp  # finished video not redone
    assert len(VideoZip(out / "JPEGImages" / "bbb.zip")) == 3
    # Other params -> every video is redone; a video gone from the archive is removed.
    (out / "JPEGImages" / "old.zip").write_bytes(b"stale")
    prepare_dataset(raw, out, SMALL)
    assert done.stat().st_mtime_ns != stamp
    assert not (out / "JPEGImages" / "old.zip").exists()
    assert VideoZip(done).read(0).shape == (12, 16, 3)


def test_six_fps_release_is_named(tmp_path):
    raw = tmp_path / "raw"
    make_release(raw / "train_all_frames.zip", "train", {"vid1": 4}, step=5)
    message = r"vid1 has frames 00000, 00005.*6-fps annotated release.*download train_all_frames"
    with pytest.raises(UserError, match=message):
        prepare_dataset(raw, tmp_path / "yv", KEEP)


def test_consecutive_frames_with_a_gap_are_not_six_fps(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in (0, 1, 2, 7):
            z.writestr(f"s/JPEGImages/v/{i:05d}.jpg", jpeg(i))
    assert list(SourceArchive(path).videos) == ["v"]


def test_corrupt_jpeg_is_named(raw, tmp_path):
    bad = {"test_all_frames/JPEGImages/ccc/00002.jpg": b"\xff\xd8broken\xff\xd9"}
    make_release(raw / "test_all_frames.zip", "test_all_frames", {"ccc": 2}, extra=bad)
    with pytest.raises(
        UserError, match=r"test_all_frames\.zip: member .*ccc/00002\.jpg: JPEG does"
    ):
        prepare_dataset(raw, tmp_path / "yv", KEEP)


def test_truncated_archive(raw, tmp_path):
    path = raw / "train_all_frames.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=r"train_all_frames\.zip: not a readable zip.*re-download"):
        prepare_dataset(raw, tmp_path / "yv", KEEP)


def test_crc_error_in_archive(raw, tmp_path):
    path = raw / "train_all_frames.zip"
    name = "train_all_frames/JPEGImages/bbb/00001.jpg"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(name) + 100] ^= 0xFF  # a byte inside the stored member
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"member {name} is damaged"):
        prepare_dataset(raw, tmp_path / "yv", KEEP)


@pytest.mark.parametrize(
    "name", ["/etc/passwd.jpg", "a/../../x.jpg", "s/JPEGImages/../v/0.jpg", "C:/x.jpg", "a\\b.jpg"]
)
def test_escaping_member_names_are_refused(tmp_path, name):
    with pytest.raises(UserError, match="would escape the output folder"):
        check_member_name(tmp_path / "a.zip", name)
    raw = tmp_path / "raw"
    make_release(raw / "train_all_frames.zip", "train_all_frames", {"v": 2}, extra={name: jpeg(0)})
    with pytest.raises(UserError, match="refusing this archive"):
        prepare_dataset(raw, tmp_path / "yv", KEEP)


def test_video_in_both_splits_and_empty_archive(tmp_path):
    raw = tmp_path / "raw"
    make_release(raw / "train_all_frames.zip", "train_all_frames", {"v": 2})
    make_release(raw / "test_all_frames.zip", "test_all_frames", {"v": 2})
    with pytest.raises(UserError, match="video v is also in the train split"):
        prepare_dataset(raw, tmp_path / "yv", KEEP)
    make_release(raw / "test_all_frames.zip", "test_all_frames", {})
    with pytest.raises(UserError, match=r"test_all_frames\.zip: no <video>/<frame>\.jpg"):
        prepare_dataset(raw, tmp_path / "yv", KEEP)


def test_missing_archive_and_bad_resize(tmp_path):
    with pytest.raises(UserError, match="archive not found; run `dvc repro download`"):
        prepare_dataset(tmp_path, tmp_path / "yv", KEEP)
    with pytest.raises(UserError, match=r"prepare\.resize: expected \[width, height\]"):
        prepare_dataset(tmp_path, tmp_path / "yv", PrepareParams(resize=[10]))


def test_without_verify_a_corrupt_frame_is_copied_not_decoded(raw, tmp_path):
    """verify_jpeg: false skips decoding (documented): corruption surfaces only at training."""
    good = jpeg(0)
    broken = good[: len(good) // 2]
    bad = {"test_all_frames/JPEGImages/ccc/00001.jpg": broken}
    make_release(raw / "test_all_frames.zip", "test_all_frames", {"ccc": 1}, extra=bad)
    out = tmp_path / "yv"
    prepare_dataset(raw, out, PrepareParams(resize=[], verify_jpeg=False))
    with pytest.raises(UserError, match="not a complete JPEG"):
        VideoZip(out / "JPEGImages" / "ccc.zip").read(1)


def test_output_zips_are_deterministic(raw, tmp_path):
    prepare_dataset(raw, tmp_path / "a", SMALL)
    prepare_dataset(raw, tmp_path / "b", SMALL)
    for name in ("aaa.zip", "ccc.zip"):
        a = (tmp_path / "a" / "JPEGImages" / name).read_bytes()
        assert a == (tmp_path / "b" / "JPEGImages" / name).read_bytes()
    assert json.loads((tmp_path / "a" / "train.json").read_text()) == {"aaa": 5, "bbb": 3}


def test_deterministic_zipinfo():
    info = deterministic_zipinfo("x/00000.jpg")
    assert info.date_time == (1980, 1, 1, 0, 0, 0) and info.external_attr >> 16 == 0o100644
    assert deterministic_zipinfo("x/").external_attr & 0x10
    assert os.sep  # keeps the os import honest on every platform
