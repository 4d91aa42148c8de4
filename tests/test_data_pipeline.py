"""Integration: `dvc repro masks` in a fresh copy of the repo: the sample, then a no-op rerun;
a malformed archive refused under DVC without leaving a data set behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from _archives import frames, make_members, make_release
from helpers import copy_repo, git_commit_all

from e2fgvi.data.frames import VideoZip, load_index


@pytest.fixture(scope="module")
def repo_copy(module_folder):
    """Tracked (and not-ignored new) files copied into a new git repo."""
    if shutil.which("git") is None:
        pytest.fail("git is needed for the DVC integration test")
    copy = copy_repo(module_folder("repo"))
    git_commit_all(copy)
    return copy


def _dvc(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(copy / "src"),
        "DVC_NO_ANALYTICS": "1",
    }
    result = subprocess.run(
        [str(bin_dir / "dvc"), *args], cwd=copy, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _mtimes(copy: Path) -> dict[str, int]:
    roots = [copy / "data" / "raw", copy / "data" / "youtube-vos", copy / "reports"]
    return {str(p): p.stat().st_mtime_ns for root in roots for p in root.rglob("*")}


def test_dvc_repro_masks_on_the_sample_then_nothing_to_do(repo_copy):
    first = _dvc(repo_copy, "repro", "masks")
    for stage in ("download", "prepare", "masks"):
        assert f"Running stage '{stage}'" in first.stdout
    yvos = repo_copy / "data" / "youtube-vos"
    train, test = load_index(yvos / "train.json"), load_index(yvos / "test.json")
    assert len(train) >= 8 and len(test) >= 2
    for video, count in {**train, **test}.items():
        assert len(VideoZip(yvos / "JPEGImages" / f"{video}.zip")) == count
        assert 20 <= count <= 60
    for video, count in test.items():
        with zipfile.ZipFile(yvos / "test_masks" / f"{video}.zip") as masks:
            assert len(masks.namelist()) == count
    assert VideoZip(yvos / "JPEGImages" / f"{next(iter(test))}.zip").read(0).shape == (240, 432, 3)
    assert (repo_copy / "reports" / "data.json").is_file()

    before = _mtimes(repo_copy)
    second = _dvc(repo_copy, "repro", "masks")
    assert "Data and pipelines are up to date" in second.stdout + second.stderr
    assert "Running stage" not in second.stdout
    assert _mtimes(repo_copy) == before


def _use_archives(copy: Path, train: Path, test: Path) -> None:
    """params.yaml: take the archives from these local paths (data.source local)."""
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["data"]["source"] = "local"
    params["data"]["train"]["location"] = str(train)
    params["data"]["test"]["location"] = str(test)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _dvc_fails(copy: Path, *args: str) -> str:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    result = subprocess.run(
        [str(bin_dir / "dvc"), *args], cwd=copy, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_refused_prepare_under_dvc_leaves_no_data_set_and_a_fixed_archive_completes(
    module_folder,
):
    """An earlier good data set, then a malformed archive: `dvc repro masks` stops at prepare
    with its one line, and no index or JPEGImages is left for masks/train/evaluate to take."""
    archives = module_folder("archives")
    good = make_release(archives / "good" / "train_all_frames.zip", "train_all_frames",
                        {"aaa": 9, "bbb": 8})  # fmt: skip
    test = make_release(archives / "test_all_frames.zip", "test_all_frames", {"ccc": 4})
    members = [*frames("train_all_frames", "aaa", range(9)),
               *frames("train_all_frames", "bbb", [*range(4), *range(5, 8)])]  # fmt: skip
    gap = make_members(archives / "gap" / "train_all_frames.zip", members)
    copy = copy_repo(module_folder("repo"))
    _use_archives(copy, good, test)
    git_commit_all(copy)
    yvos = copy / "data" / "youtube-vos"
    _dvc(copy, "repro", "masks")
    assert load_index(yvos / "train.json") == {"aaa": 9, "bbb": 8}

    _use_archives(copy, gap, test)
    output = _dvc_fails(copy, "repro", "masks")
    assert "video bbb has no frame 00004 (00003.jpg is followed by 00005.jpg)" in output
    assert "Running stage 'masks'" not in output
    left = sorted(p.name for p in yvos.iterdir() if not p.name.startswith("."))
    assert left == ["test_masks"]  # masks of the earlier run; no index, no JPEGImages

    fixed = make_release(archives / "fixed" / "train_all_frames.zip", "train_all_frames",
                         {"aaa": 9, "bbb": 8, "ddd": 10})  # fmt: skip
    _use_archives(copy, fixed, test)
    _dvc(copy, "repro", "masks")
    assert load_index(yvos / "train.json") == {"aaa": 9, "bbb": 8, "ddd": 10}
    for video, count in {"aaa": 9, "bbb": 8, "ddd": 10, "ccc": 4}.items():
        assert len(VideoZip(yvos / "JPEGImages" / f"{video}.zip")) == count
    assert sorted(p.name for p in yvos.iterdir()) == [
        "JPEGImages", "test.json", "test_masks", "train.json"
    ]  # fmt: skip
    status = _dvc(copy, "status", "masks")
    assert "up to date" in status.stdout + status.stderr
