"""The per-video zip reader and the JSON index."""

from __future__ import annotations

import json
import pickle
import zipfile

import cv2
import numpy as np
import pytest
from _archives import jpeg
from PIL import Image

from e2fgvi.data.frames import VideoZip, check_index, decode_jpeg, load_index, resize_frame
from e2fgvi.errors import UserError


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "abc.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in (2, 0, 1):  # stored out of order: the reader sorts
            z.writestr(f"{i:05d}.jpg", jpeg(40 * i))
        z.writestr("notes.txt", b"not a frame")
    return path


def test_names_sorted_and_only_jpegs(video):
    with VideoZip(video) as frames:
        assert frames.names == ["00000.jpg", "00001.jpg", "00002.jpg"]
        assert len(frames) == 3


def test_read_is_rgb_uint8(tmp_path):
    path = tmp_path / "red.zip"
    bgr_red = np.zeros((8, 8, 3), np.uint8)
    bgr_red[..., 2] = 255
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("00000.jpg", cv2.imencode(".jpg", bgr_red)[1].tobytes())
    frame = VideoZip(path).read(0)
    assert frame.dtype == np.uint8 and frame.shape == (8, 8, 3)
    assert frame[..., 0].mean() > 240 and frame[..., 2].mean() < 15  # red first: RGB


def test_read_many_keeps_order(video):
    frames = VideoZip(video)
    many = frames.read_many([2, 0])
    assert np.array_equal(many[0], frames.read(2)) and np.array_equal(many[1], frames.read(0))
    assert many[0].mean() > many[1].mean()


def test_out_of_range_names_the_zip(video):
    with pytest.raises(UserError, match=r"abc\.zip: frame 3 requested but the zip holds 3"):
        VideoZip(video).read(3)


def test_corrupt_member_names_zip_and_member(tmp_path):
    path = tmp_path / "bad.zip"
    good = jpeg(1)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("00000.jpg", good)
        z.writestr("00001.jpg", good[: len(good) // 2])  # truncated JPEG
        z.writestr("00002.jpg", b"\xff\xd8garbage\xff\xd9")
    frames = VideoZip(path)
    frames.read(0)
    with pytest.raises(UserError, match=r"bad\.zip: member 00001\.jpg: not a complete JPEG"):
        frames.read(1)
    with pytest.raises(UserError, match=r"bad\.zip: member 00002\.jpg: JPEG does not decode"):
        frames.read(2)


def test_crc_error_names_zip_and_member(tmp_path):
    path = tmp_path / "crc.zip"
    data = jpeg(3)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("00000.jpg", data)
    raw = bytearray(path.read_bytes())
    at = raw.find(data[100:120])
    raw[at] ^= 0xFF  # flip one stored byte: the CRC no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"crc\.zip: member 00000\.jpg is damaged"):
        VideoZip(path).read(0)


def test_missing_and_non_zip(tmp_path):
    with pytest.raises(UserError, match="video zip not found"):
        VideoZip(tmp_path / "nope.zip")
    (tmp_path / "x.zip").write_bytes(b"hello")
    with pytest.raises(UserError, match="not a readable zip"):
        VideoZip(tmp_path / "x.zip")


def test_pickles_without_its_handle(video):
    frames = VideoZip(video)
    frames.read(0)
    clone = pickle.loads(pickle.dumps(frames))
    assert clone._zip is None
    assert np.array_equal(clone.read(1), frames.read(1))


def test_decode_rejects_non_jpeg():
    with pytest.raises(UserError, match=r"x\.jpg: not a complete JPEG"):
        decode_jpeg(b"PNG...", "x.jpg")


def test_load_index(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"a": 3, "b": 180}))
    assert load_index(path) == {"a": 3, "b": 180}
    cases = [
        ([1, 2], "one JSON object"),
        ({"a": 0}, "'a' has frame count 0"),
        ({"a": "3"}, "frame count '3'"),
        ({"a": True}, "frame count True"),
    ]
    for bad, message in cases:
        path.write_text(json.dumps(bad))
        with pytest.raises(UserError, match=message):
            load_index(path)
    path.write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_index(path)
    with pytest.raises(UserError, match="index not found"):
        load_index(tmp_path / "none.json")


def test_check_index_catches_count_mismatches(video, tmp_path):
    json_path = tmp_path / "train.json"
    check_index({"abc": 3}, json_path, tmp_path)
    with pytest.raises(
        UserError, match=r"train\.json: video abc has 180 frames but .*abc\.zip holds 3"
    ):
        check_index({"abc": 180}, json_path, tmp_path)
    with pytest.raises(UserError, match=r"video xyz has no .*xyz\.zip; rerun prepare"):
        check_index({"xyz": 1}, json_path, tmp_path)


def test_resize_frame_is_pil_bicubic_and_a_no_op_at_size():
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert resize_frame(rgb, (40, 30)) is rgb
    expected = np.asarray(Image.fromarray(rgb).resize((20, 12), Image.Resampling.BICUBIC))
    assert np.array_equal(resize_frame(rgb, (20, 12)), expected)
