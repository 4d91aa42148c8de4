"""Integration: `dvc repro masks` on the sample in a fresh copy of the repo, then a no-op rerun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2fgvi.data.frames import VideoZip, load_index

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]


@pytest.fixture(scope="module")
def repo_copy(repo_root, tmp_path_factory):
    """Tracked (and not-ignored new) files copied into a new git repo."""
    if shutil.which("git") is None:
        pytest.fail("git is needed for the DVC integration test")
    copy = tmp_path_factory.mktemp("repo")
    files = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(files, cwd=repo_root, capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        source = repo_root / name
        if source.is_file() and not source.is_symlink():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run([*GIT, *command], cwd=copy, check=True)
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
