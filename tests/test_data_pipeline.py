"""Integration: `dvc repro masks` on the sample in a fresh copy of the repo, then a no-op rerun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import copy_repo, git_commit_all

from e2fgvi.data.frames import VideoZip, load_index


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """Tracked (and not-ignored new) files copied into a new git repo."""
    if shutil.which("git") is None:
        pytest.fail("git is needed for the DVC integration test")
    copy = copy_repo(tmp_path_factory.mktemp("repo"))
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
        assert len(list((yvos / "test_masks" / video).glob("*.png"))) == count
    assert VideoZip(yvos / "JPEGImages" / f"{next(iter(test))}.zip").read(0).shape == (240, 432, 3)
    assert (repo_copy / "reports" / "data.json").is_file()

    before = _mtimes(repo_copy)
    second = _dvc(repo_copy, "repro", "masks")
    assert "Data and pipelines are up to date" in second.stdout + second.stderr
    assert "Running stage" not in second.stdout
    assert _mtimes(repo_copy) == before
