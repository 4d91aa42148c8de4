"""The evaluation masks on disk: one deterministic zip per video, read back in both layouts."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from e2fgvi.config import MaskParams
from e2fgvi.data.masks import random_mask_sequence, video_rng, write_eval_masks
from e2fgvi.errors import UserError
from e2fgvi.eval.testset import load_masks

# Small frames keep the test fast; the layout does not depend on the size.
CFG = MaskParams(width=64, height=36)
INDEX = {"vA": 5, "vB": 3}
SIZE = (CFG.width, CFG.height)


def _expected_pngs(video: str, count: int) -> list[bytes]:
    """The PNG bytes the per-frame layout held: the seeded masks encoded by OpenCV as 0/255."""
    rng = video_rng(CFG.eval_seed, video)
    masks = random_mask_sequence(
        rng, count, CFG.height, CFG.width, CFG, moving_prob=CFG.eval_moving_prob
    )
    return [cv2.imencode(".png", m * 255)[1].tobytes() for m in masks]


def _write(root: Path, index: dict[str, int] = INDEX) -> Path:
    (root / "test.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "test.json").write_text(json.dumps(index))
    write_eval_masks(index, root / "test_masks", CFG)
    return root / "test_masks"


def test_one_stored_zip_per_video_holding_the_per_frame_pngs(tmp_path):
    out = _write(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["vA.zip", "vB.zip"]
    for video, count in INDEX.items():
        with zipfile.ZipFile(out / f"{video}.zip") as archive:
            infos = archive.infolist()
            assert [i.filename for i in infos] == [f"{k:05d}.png" for k in range(count)]
            assert {(i.compress_type, i.date_time) for i in infos} == {
                (zipfile.ZIP_STORED, (1980, 1, 1, 0, 0, 0))
            }
            assert [archive.read(i) for i in infos] == _expected_pngs(video, count)


def test_the_zips_are_byte_identical_on_every_write(tmp_path):
    first, second = _write(tmp_path / "a"), _write(tmp_path / "b")
    again = (first / "vA.zip").read_bytes()
    _write(tmp_path / "a")  # rewritten in place
    assert (first / "vA.zip").read_bytes() == again == (second / "vA.zip").read_bytes()
    assert (first / "vB.zip").read_bytes() == (second / "vB.zip").read_bytes()


def test_entries_of_earlier_runs_are_removed(tmp_path):
    out = tmp_path / "test_masks"
    (out / "vA").mkdir(parents=True)  # the former per-frame layout of a current video
    (out / "vA" / "00000.png").write_bytes(b"old")
    (out / "gone").mkdir()
    (out / "gone.zip").write_bytes(b"a video no longer in the index")
    (out / ".vA.zip.x1.tmp").write_bytes(b"an interrupted write")
    _write(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["vA.zip", "vB.zip"]


def _as_folders(zips: Path, folders: Path) -> None:
    """The official release's layout test_masks/<video>/<k:05d>.png, from our zips."""
    for path in zips.glob("*.zip"):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(folders / path.stem)


def test_load_masks_reads_both_layouts_to_the_same_arrays(tmp_path):
    zips = _write(tmp_path / "ours")
    _as_folders(zips, tmp_path / "official" / "test_masks")
    for video, count in INDEX.items():
        ours = load_masks(tmp_path / "ours", video, count, SIZE, 0)
        official = load_masks(tmp_path / "official", video, count, SIZE, 0)
        expected = [
            cv2.imdecode(np.frombuffer(d, np.uint8), 0) > 0 for d in _expected_pngs(video, count)
        ]
        assert np.array_equal(ours, official) and np.array_equal(ours, np.stack(expected))
        dilated = load_masks(tmp_path / "official", video, count, SIZE, 2)
        assert np.array_equal(load_masks(tmp_path / "ours", video, count, SIZE, 2), dilated)
        assert dilated.sum() > ours.sum() > 0


def test_the_zip_is_read_before_a_folder_of_the_same_video(tmp_path):
    zips = _write(tmp_path)
    (zips / "vA").mkdir()
    for k in range(INDEX["vA"]):
        (zips / "vA" / f"{k:05d}.png").write_bytes(
            cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
        )
    masks = load_masks(tmp_path, "vA", INDEX["vA"], SIZE, 0)
    assert masks.any()  # the folder's masks are all zero


def _members(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _png() -> bytes:
    return cv2.imencode(".png", np.full((4, 4), 255, np.uint8))[1].tobytes()


def _missing_video(masks: Path) -> tuple[str, str]:
    return "vA.zip", "missing"


def _missing_member(masks: Path) -> tuple[str, str]:
    _members(masks / "vA.zip", {"00000.png": _png(), "00002.png": _png()})
    return "vA.zip", "member 00001.png missing"


def _count_mismatch(masks: Path) -> tuple[str, str]:
    _members(masks / "vA.zip", {"00000.png": _png()})
    return "vA.zip", "holds 1 masks but test.json says 2"


def _unreadable_png(masks: Path) -> tuple[str, str]:
    _members(masks / "vA.zip", {"00000.png": _png(), "00001.png": _png()[:30]})
    return "vA.zip", "member 00001.png: not a readable PNG"


def _not_a_zip(masks: Path) -> tuple[str, str]:
    (masks / "vA.zip").write_bytes(b"PK but not a zip")
    return "vA.zip", "not a readable zip"


def _missing_file_in_folder(masks: Path) -> tuple[str, str]:
    (masks / "vA").mkdir()
    (masks / "vA" / "00000.png").write_bytes(_png())
    return "00001.png", "missing"


def _unreadable_png_in_folder(masks: Path) -> tuple[str, str]:
    (masks / "vA").mkdir()
    (masks / "vA" / "00000.png").write_bytes(_png())
    (masks / "vA" / "00001.png").write_bytes(b"\x89PNG garbage")
    return "00001.png", "not a readable PNG"


@pytest.mark.parametrize(
    "damage",
    [_missing_video, _missing_member, _count_mismatch, _unreadable_png, _not_a_zip,
     _missing_file_in_folder, _unreadable_png_in_folder],
)  # fmt: skip
def test_bad_masks_are_one_line_naming_the_file(tmp_path, damage):
    masks = tmp_path / "test_masks"
    masks.mkdir()
    name, words = damage(masks)
    with pytest.raises(UserError) as caught:
        load_masks(tmp_path, "vA", 2, SIZE, 0)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(masks)), message
    assert name in message and words in message, message
    assert message.endswith("rerun the masks stage (dvc repro masks)"), message
