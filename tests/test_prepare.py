"""prepare: release archives -> per-video zips + JSON index, with its validations."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
from _archives import frames, jpeg, make_members, make_release, png

from e2fgvi.config import PrepareParams
from e2fgvi.data import prepare as prepare_module
from e2fgvi.data.archive import SourceArchive, check_member_name
from e2fgvi.data.frames import VideoZip, decode_jpeg, deterministic_zipinfo, load_index
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
    report = prepare_dataset(raw, out, KEEP, min_train_frames=2)
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
    report = prepare_dataset(raw, out, SMALL, min_train_frames=2)
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
    with pytest.raises(KeyboardInterrupt):  # in this process: worker processes miss the patch
        prepare_dataset(raw, out, KEEP, min_train_frames=2, workers=1)
    # Nothing a later stage could take; the finished video waits in the work folder.
    assert sorted(p.name for p in out.iterdir()) == [".JPEGImages.partial"]
    work = out / ".JPEGImages.partial"
    assert sorted(p.name for p in work.iterdir()) == ["aaa.zip"]  # no temporary file
    done = out / "JPEGImages" / "aaa.zip"
    stamp = (work / "aaa.zip").stat().st_mtime_ns
    monkeypatch.setattr(prepare_module, "_convert", real)
    prepare_dataset(raw, out, KEEP, min_train_frames=2)
    assert done.stat().st_mtime_ns == stamp  # finished video not redone
    assert len(VideoZip(out / "JPEGImages" / "bbb.zip")) == 3
    # Other params -> every video is redone; a video gone from the archive is removed.
    (out / "JPEGImages" / "old.zip").write_bytes(b"stale")
    prepare_dataset(raw, out, SMALL, min_train_frames=2)
    assert done.stat().st_mtime_ns != stamp
    assert not (out / "JPEGImages" / "old.zip").exists()
    assert VideoZip(done).read(0).shape == (12, 16, 3)


def test_six_fps_release_is_named(tmp_path):
    raw = tmp_path / "raw"
    make_release(raw / "train_all_frames.zip", "train", {"vid1": 4}, step=5)
    message = r"vid1 has frames 00000, 00005.*6-fps annotated release.*download train_all_frames"
    with pytest.raises(UserError, match=message):
        prepare_dataset(raw, tmp_path / "yv", KEEP, min_train_frames=2)


def test_consecutive_frames_with_a_gap_are_a_gap_not_six_fps(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in (0, 1, 2, 7):
            z.writestr(f"s/JPEGImages/v/{i:05d}.jpg", jpeg(i))
    with pytest.raises(UserError, match="video v has no frame 00003") as info:
        SourceArchive(path)
    assert "6-fps" not in str(info.value)


def test_corrupt_jpeg_is_named(raw, tmp_path):
    bad = {"test_all_frames/JPEGImages/ccc/00002.jpg": b"\xff\xd8broken\xff\xd9"}
    make_release(raw / "test_all_frames.zip", "test_all_frames", {"ccc": 2}, extra=bad)
    with pytest.raises(
        UserError, match=r"test_all_frames\.zip: member .*ccc/00002\.jpg: JPEG does"
    ):
        prepare_dataset(raw, tmp_path / "yv", KEEP, min_train_frames=2)


def test_truncated_archive(raw, tmp_path):
    path = raw / "train_all_frames.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=r"train_all_frames\.zip: not a readable zip.*re-download"):
        prepare_dataset(raw, tmp_path / "yv", KEEP, min_train_frames=2)


def test_crc_error_in_archive(raw, tmp_path):
    path = raw / "train_all_frames.zip"
    name = "train_all_frames/JPEGImages/bbb/00001.jpg"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(name) + 100] ^= 0xFF  # a byte inside the stored member
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"member {name} is damaged"):
        prepare_dataset(raw, tmp_path / "yv", KEEP, min_train_frames=2)


@pytest.mark.parametrize(
    "name", ["/etc/passwd.jpg", "a/../../x.jpg", "s/JPEGImages/../v/0.jpg", "C:/x.jpg", "a\\b.jpg"]
)
def test_escaping_member_names_are_refused(tmp_path, name):
    with pytest.raises(UserError, match="would escape the output folder"):
        check_member_name(tmp_path / "a.zip", name)
    raw = tmp_path / "raw"
    make_release(raw / "train_all_frames.zip", "train_all_frames", {"v": 2}, extra={name: jpeg(0)})
    with pytest.raises(UserError, match="refusing this archive"):
        prepare_dataset(raw, tmp_path / "yv", KEEP, min_train_frames=2)


def test_video_in_both_splits_and_empty_archive(tmp_path):
    raw = tmp_path / "raw"
    make_release(raw / "train_all_frames.zip", "train_all_frames", {"v": 2})
    make_release(raw / "test_all_frames.zip", "test_all_frames", {"v": 2})
    with pytest.raises(UserError, match="video v is also in the train split"):
        prepare_dataset(raw, tmp_path / "yv", KEEP, min_train_frames=2)
    make_release(raw / "test_all_frames.zip", "test_all_frames", {})
    with pytest.raises(UserError, match=r"test_all_frames\.zip: no <video>/<frame>\.jpg"):
        prepare_dataset(raw, tmp_path / "yv", KEEP, min_train_frames=2)


def test_missing_archive_and_bad_resize(tmp_path):
    with pytest.raises(UserError, match="archive not found; run `dvc repro download`"):
        prepare_dataset(tmp_path, tmp_path / "yv", KEEP, min_train_frames=2)
    with pytest.raises(UserError, match=r"prepare\.resize: expected \[width, height\]"):
        prepare_dataset(tmp_path, tmp_path / "yv", PrepareParams(resize=[10]), min_train_frames=2)


def test_without_verify_a_corrupt_frame_is_copied_not_decoded(raw, tmp_path):
    """verify_jpeg: false skips decoding (documented): corruption past the JPEG header (which
    is read for the frame size) surfaces only at training."""
    good = jpeg(0)
    broken = good[:-10]
    bad = {"test_all_frames/JPEGImages/ccc/00001.jpg": broken}
    make_release(raw / "test_all_frames.zip", "test_all_frames", {"ccc": 1}, extra=bad)
    out = tmp_path / "yv"
    prepare_dataset(raw, out, PrepareParams(resize=[], verify_jpeg=False), min_train_frames=2)
    with pytest.raises(UserError, match="not a complete JPEG"):
        VideoZip(out / "JPEGImages" / "ccc.zip").read(1)


def test_output_zips_are_deterministic(raw, tmp_path):
    prepare_dataset(raw, tmp_path / "a", SMALL, min_train_frames=2)
    prepare_dataset(raw, tmp_path / "b", SMALL, min_train_frames=2)
    for name in ("aaa.zip", "ccc.zip"):
        a = (tmp_path / "a" / "JPEGImages" / name).read_bytes()
        assert a == (tmp_path / "b" / "JPEGImages" / name).read_bytes()
    assert json.loads((tmp_path / "a" / "train.json").read_text()) == {"aaa": 5, "bbb": 3}


def test_deterministic_zipinfo():
    info = deterministic_zipinfo("x/00000.jpg")
    assert info.date_time == (1980, 1, 1, 0, 0, 0) and info.external_attr >> 16 == 0o100644
    assert deterministic_zipinfo("x/").external_attr & 0x10
    assert os.sep  # keeps the os import honest on every platform


# --------------------------------------------------------------------------- malformed videos
# A YouTube-VOS video is a complete run of same-size JPEG frames 00000, 00001, …; anything else
# is refused in one line naming the archive, the video and the frame, and the refused run leaves
# nothing a later stage could take for a complete data set.

TRAIN, TEST = "train_all_frames", "test_all_frames"


def _good_test_archive(raw):
    make_release(raw / f"{TEST}.zip", TEST, {"ccc": 4})


def _refused(raw, tmp_path, message, min_train_frames=2, cfg=KEEP):
    out = tmp_path / "yv"
    with pytest.raises(UserError, match=message) as info:
        prepare_dataset(raw, out, cfg, min_train_frames=min_train_frames)
    assert "\n" not in str(info.value)
    _assert_no_data_set(out)
    return str(info.value)


def _assert_no_data_set(out):
    """No index, no JPEGImages: nothing a later stage could take (only the hidden work folder)."""
    if out.exists():
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []


def test_a_gap_in_the_numbering_is_refused(tmp_path):
    raw = tmp_path / "raw"
    numbers = [*range(10), 11, 12]
    make_members(raw / f"{TRAIN}.zip", frames(TRAIN, "vid", numbers))
    _good_test_archive(raw)
    _refused(
        raw, tmp_path, rf"{TRAIN}\.zip: video vid has no frame 00010 \(00009\.jpg is followed by"
        r" 00011\.jpg\); a YouTube-VOS video is a complete run of frames from 00000",
    )  # fmt: skip


def test_numbering_that_does_not_start_at_zero_is_refused(tmp_path):
    raw = tmp_path / "raw"
    make_members(raw / f"{TRAIN}.zip", frames(TRAIN, "vid", range(3, 9)))
    _good_test_archive(raw)
    _refused(raw, tmp_path, rf"{TRAIN}\.zip: video vid starts at frame 00003\.jpg, not 00000")


def test_a_frame_that_is_not_numbered_is_refused(tmp_path):
    raw = tmp_path / "raw"
    members = [*frames(TRAIN, "vid", range(4)), (f"{TRAIN}/JPEGImages/vid/cover.jpg", jpeg(9))]
    make_members(raw / f"{TRAIN}.zip", members)
    _good_test_archive(raw)
    _refused(raw, tmp_path, r"video vid has frame cover\.jpg, not a 5-digit frame number")


def test_a_member_twice_in_a_video_is_refused_not_the_second_copy_taken(tmp_path):
    raw = tmp_path / "raw"
    members = frames(TRAIN, "vid", range(5))
    members.append((f"{TRAIN}/JPEGImages/vid/00002.jpg", jpeg(200)))  # a second, other 00002
    make_members(raw / f"{TRAIN}.zip", members)
    _good_test_archive(raw)
    _refused(raw, tmp_path, rf"{TRAIN}\.zip: video vid holds frame 00002\.jpg twice")


def test_the_same_frame_as_jpg_and_jpeg_is_refused(tmp_path):
    raw = tmp_path / "raw"
    members = [*frames(TRAIN, "vid", range(3)), (f"{TRAIN}/JPEGImages/vid/00001.jpeg", jpeg(1))]
    make_members(raw / f"{TRAIN}.zip", members)
    _good_test_archive(raw)
    _refused(raw, tmp_path, r"video vid holds frame 00001\.jpeg and 00001\.jpg")


def test_empty_and_short_videos_are_all_named(tmp_path):
    raw = tmp_path / "raw"
    members = [
        *frames(TRAIN, "long", range(10)),
        (f"{TRAIN}/JPEGImages/empty/", b""),  # a video folder with no frames
        *frames(TRAIN, "short", range(3)),
        *frames(TRAIN, "tiny", range(1)),
    ]
    make_members(raw / f"{TRAIN}.zip", members)
    _good_test_archive(raw)
    message = _refused(
        raw, tmp_path, rf"{TRAIN}\.zip: videos empty \(0 frames\), short \(3 frames\), tiny \(1 "
        r"frame\) have fewer than 8 frames, what one training clip needs "
        r"\(train\.num_local_frames \+ train\.num_ref_frames\)", min_train_frames=8,
    )  # fmt: skip
    assert "long" not in message


def test_a_test_video_with_one_frame_is_refused(tmp_path):
    raw = tmp_path / "raw"
    make_release(raw / f"{TRAIN}.zip", TRAIN, {"aaa": 5})
    make_release(raw / f"{TEST}.zip", TEST, {"ccc": 4, "one": 1})
    _refused(raw, tmp_path, rf"{TEST}\.zip: video one \(1 frame\) has fewer than 2 frames")


@pytest.mark.parametrize("cfg", [KEEP, SMALL, PrepareParams(resize=[], verify_jpeg=False)])
def test_frames_of_different_sizes_are_refused_never_resized(tmp_path, cfg):
    raw = tmp_path / "raw"
    members = [*frames(TRAIN, "vid", range(3)), *frames(TRAIN, "vid", [3], size=(40, 20))]
    members += frames(TRAIN, "vid", [4, 5])
    make_members(raw / f"{TRAIN}.zip", members)
    _good_test_archive(raw)
    _refused(
        raw, tmp_path, rf"{TRAIN}\.zip: video vid frame 00003\.jpg is 40x20 but 00000\.jpg is "
        r"32x24; a video's frames must share one size", cfg=cfg,
    )  # fmt: skip


def test_png_frames_are_refused_by_name(tmp_path):
    raw = tmp_path / "raw"
    members = [(f"{TRAIN}/JPEGImages/vid/{i:05d}.png", png(i)) for i in range(5)]
    make_members(raw / f"{TRAIN}.zip", [*frames(TRAIN, "ok", range(3)), *members])
    _good_test_archive(raw)
    _refused(
        raw, tmp_path, rf"{TRAIN}\.zip: video vid has PNG frames: 00000\.png, 00001\.png, "
        r"00002\.png, …; YouTube-VOS frames are JPEG",
    )  # fmt: skip


def test_a_png_named_jpg_is_refused_also_without_decoding(tmp_path):
    raw = tmp_path / "raw"
    members = [*frames(TRAIN, "vid", range(2)), (f"{TRAIN}/JPEGImages/vid/00002.jpg", png(2))]
    make_members(raw / f"{TRAIN}.zip", members)
    _good_test_archive(raw)
    unchecked = PrepareParams(resize=[], verify_jpeg=False)
    _refused(raw, tmp_path, r"member .*vid/00002\.jpg: not a JPEG \(PNG\)", cfg=unchecked)


def _damage(path, name):
    """Flip a byte inside ``name``'s stored data; the central directory stays as it was."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(name) + len(info.extra) + 100] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_crc_error_is_refused_also_over_an_earlier_good_output(raw, tmp_path):
    out = tmp_path / "yv"
    good = prepare_dataset(raw, out, KEEP, min_train_frames=2)
    name = f"{TRAIN}/JPEGImages/bbb/00001.jpg"
    _damage(raw / f"{TRAIN}.zip", name)
    with zipfile.ZipFile(raw / f"{TRAIN}.zip") as z:
        assert z.testzip() == name  # the damage is what a CRC check finds
    with pytest.raises(UserError, match=rf"{TRAIN}\.zip: member {name} is damaged \(Bad CRC"):
        prepare_dataset(raw, out, KEEP, min_train_frames=2)
    _assert_no_data_set(out)
    make_release(raw / f"{TRAIN}.zip", TRAIN, {"aaa": 5, "bbb": 3})  # re-downloaded
    assert prepare_dataset(raw, out, KEEP, min_train_frames=2) == good


def test_a_refusal_after_finished_videos_leaves_no_data_set_and_a_rerun_is_complete(raw, tmp_path):
    """The odd video comes last, after other videos were written: still nothing usable."""
    out = tmp_path / "yv"
    fresh = prepare_dataset(raw, tmp_path / "fresh", KEEP, min_train_frames=2)
    good_bytes = (tmp_path / "fresh" / "JPEGImages" / "bbb.zip").read_bytes()
    prepare_dataset(raw, out, KEEP, min_train_frames=2)  # an earlier complete output
    members = [*frames(TRAIN, "aaa", range(5)), *frames(TRAIN, "bbb", range(2))]
    members += frames(TRAIN, "bbb", [2], size=(40, 20))
    make_members(raw / f"{TRAIN}.zip", members)
    with pytest.raises(UserError, match=r"video bbb frame 00002\.jpg is 40x20"):
        prepare_dataset(raw, out, KEEP, min_train_frames=2)
    _assert_no_data_set(out)
    make_release(raw / f"{TRAIN}.zip", TRAIN, {"aaa": 5, "bbb": 3})
    assert prepare_dataset(raw, out, KEEP, min_train_frames=2) == fresh
    assert load_index(out / "train.json") == {"aaa": 5, "bbb": 3}
    assert (out / "JPEGImages" / "bbb.zip").read_bytes() == good_bytes
    assert sorted(p.name for p in out.iterdir()) == ["JPEGImages", "test.json", "train.json"]


def test_worker_processes_write_the_same_bytes_as_one_process(tmp_path):
    """The process pool changes where frames are converted, never the zips or the report."""
    raw = tmp_path / "raw"
    videos = {f"v{i:02d}": 3 + i % 4 for i in range(9)}
    make_release(raw / "train_all_frames.zip", "train_all_frames", videos, size=(48, 30))
    make_release(raw / "test_all_frames.zip", "test_all_frames", {"t0": 3, "t1": 5}, size=(40, 20))
    outputs = {}
    for workers in (1, 3):
        out = tmp_path / f"yv{workers}"
        report = prepare_dataset(raw, out, SMALL, min_train_frames=2, workers=workers)
        files = {p.name: p.read_bytes() for p in sorted((out / "JPEGImages").iterdir())}
        outputs[workers] = (report, files, (out / "train.json").read_bytes())
    assert len(outputs[1][1]) == 11
    assert outputs[3] == outputs[1]


def _damaged_jpegs() -> dict[str, bytes]:
    """Damaged variants of a real 64x48 JPEG: what a bad download or disk leaves behind."""
    good = jpeg(7, width=64, height=48)
    scan = good.index(b"\xff\xda")  # start of the entropy-coded data
    return {
        "good": good,
        "cut inside the scan, EOI glued on": good[: scan + 40] + b"\xff\xd9",
        "header bytes zeroed": good[:2] + bytes(40) + good[42:],
        "no SOF (frame header) at all": good[:2] + good[good.index(b"\xff\xc4") :],
        "garbage after SOI": b"\xff\xd8" + bytes(range(256)) + b"\xff\xd9",
    }


@pytest.mark.parametrize("name", list(_damaged_jpegs()))
def test_checking_a_kept_frame_at_one_eighth_scale_refuses_what_a_full_decode_refuses(name):
    """prepare checks kept frames with a 1/8-scale decode; it must not let more through."""
    data = _damaged_jpegs()[name]
    verdicts = []
    for reduction in (1, 8):
        try:
            decode_jpeg(data, "f.jpg", reduction=reduction)
            verdicts.append("kept")
        except UserError:
            verdicts.append("refused")
    assert verdicts[0] == verdicts[1], f"{name}: full decode {verdicts[0]}, 1/8 {verdicts[1]}"
    # libjpeg only warns about a scan cut short when an EOI follows (it fills grey), at any scale;
    # plain truncation, the common case, is refused before decoding (the SOI/EOI check).
    kept = {"good", "cut inside the scan, EOI glued on"}
    assert verdicts[0] == ("kept" if name in kept else "refused")
