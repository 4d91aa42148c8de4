"""The data stage entry points, run as DVC runs them (cwd = a folder with params.yaml)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
import yaml
from _archives import make_release
from _stages import call_stage

from e2fgvi.errors import UserError
from e2fgvi.stages import download, masks, prepare, pretrained


@pytest.fixture
def project(tmp_path, monkeypatch, repo_root):
    """A working folder holding a copy of params.yaml; returns a function to edit it."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())

    def edit(**sections):
        for dotted, value in sections.items():
            node = raw
            *parents, leaf = dotted.split("__")
            for part in parents:
                node = node[part]
            node[leaf] = value
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))

    edit()
    monkeypatch.chdir(tmp_path)
    return edit


SPYNET = "spynet_20210409-c6c1bd09.pth"


def _pngs(folder):
    return sorted(p.name for p in folder.iterdir())


def test_masks_stage_writes_one_zip_of_binary_pngs_per_video(project, tmp_path):
    (tmp_path / "test.json").write_text(json.dumps({"v1": 5, "v2": 3}))
    call_stage(masks, ["--index", "test.json", "--out", "test_masks"])
    out = tmp_path / "test_masks"
    assert _pngs(out) == ["v1.zip", "v2.zip"]
    with zipfile.ZipFile(out / "v1.zip") as archive:
        assert archive.namelist() == [f"{i:05d}.png" for i in range(5)]
        data = archive.read("00004.png")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (240, 432) and image.dtype == np.uint8
    assert set(np.unique(image)) == {0, 255}
    before = (out / "v1.zip").read_bytes()
    # Adding and removing videos leaves the others' masks untouched (per-video seeds).
    (tmp_path / "test.json").write_text(json.dumps({"v0": 2, "v1": 5}))
    call_stage(masks, ["--index", "test.json", "--out", "test_masks"])
    assert _pngs(out) == ["v0.zip", "v1.zip"]
    assert (out / "v1.zip").read_bytes() == before
    project(masks__eval_seed=7)
    call_stage(masks, ["--index", "test.json", "--out", "test_masks"])
    assert (out / "v1.zip").read_bytes() != before


def test_pretrained_stage_skips_with_a_manifest(project, tmp_path):
    call_stage(pretrained,
        ["--out", "pre", "--spynet", f"pre/{SPYNET}", "--i3d", "pre/rgb_imagenet.pt",
         "--partial-dir", "pre.partial"]
    )  # fmt: skip
    assert _pngs(tmp_path / "pre") == ["manifest.json"]
    manifest = json.loads((tmp_path / "pre" / "manifest.json").read_text())
    assert manifest["spynet"]["file"] == "spynet_20210409-c6c1bd09.pth"
    assert manifest["i3d"]["file"] == "rgb_imagenet.pt"
    assert not manifest["spynet"]["fetched"] and not manifest["i3d"]["fetched"]


def test_pretrained_stage_takes_a_local_file(project, tmp_path):
    weights = tmp_path / "downloads" / "rgb_imagenet.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    project(data__pretrained__i3d={"fetch": True, "url": str(weights), "sha256": ""})
    call_stage(pretrained,
        ["--out", "pre", "--spynet", f"pre/{SPYNET}", "--i3d", "pre/rgb_imagenet.pt",
         "--partial-dir", "pre.partial"]
    )  # fmt: skip
    assert (tmp_path / "pre" / "rgb_imagenet.pt").read_bytes() == b"weights"
    assert json.loads((tmp_path / "pre" / "manifest.json").read_text())["i3d"]["fetched"]


def test_download_local_then_prepare(project, tmp_path):
    downloads = tmp_path / "downloads"
    train = make_release(downloads / "my_train.zip", "train_all_frames", {"a1": 3, "a2": 4})
    test = make_release(downloads / "my_test.zip", "test_all_frames", {"b1": 5})
    project(
        data__source="local",
        data__train={"location": str(train), "sha256": "", "size": train.stat().st_size},
        data__test={"location": str(test), "sha256": "", "size": 0},
        prepare__resize=[],
        train__num_local_frames=2,
        train__num_ref_frames=1,
    )
    call_stage(download, ["--out", "raw", "--partial-dir", "raw.partial"])
    assert os.stat(tmp_path / "raw" / "train_all_frames.zip").st_ino == os.stat(train).st_ino
    call_stage(prepare, ["--raw", "raw", "--out", "yv", "--report", "reports/data.json",
                         "--details", "reports/data_details.json"])  # fmt: skip
    figures = json.loads((tmp_path / "reports" / "data.json").read_text())
    assert figures["train_frames"] == 7 and figures["test_videos"] == 1
    assert all(isinstance(v, int) for v in figures.values())  # DVC metrics: flat numbers only
    report = json.loads((tmp_path / "reports" / "data_details.json").read_text())
    assert report["train"]["frames"] == 7 and report["test"]["resolutions"]
    assert json.loads((tmp_path / "yv" / "test.json").read_text()) == {"b1": 5}
    # A training clip of 4 + 1 frames: both videos are too short, and both are named.
    project(train__num_local_frames=4)
    with pytest.raises(
        UserError, match=r"videos a1 \(3 frames\), a2 \(4 frames\) have fewer than 5"
    ):
        call_stage(prepare, ["--raw", "raw", "--out", "yv", "--report", "reports/data.json",
                             "--details", "reports/data_details.json"])  # fmt: skip


def test_download_stage_explains_missing_locations(project):
    project(data__source="local")
    with pytest.raises(UserError, match=r"data\.train\.location is empty: set it to the path"):
        call_stage(download, ["--out", "raw", "--partial-dir", "raw.partial"])
    project(data__source="url", data__train={"location": "/tmp/x.zip", "sha256": "", "size": 0})
    with pytest.raises(UserError, match=r"does not fit data\.source 'url'"):
        call_stage(download, ["--out", "raw", "--partial-dir", "raw.partial"])


def test_stage_error_is_one_line_and_exit_1(project, tmp_path, repo_root):
    env = {**os.environ, "PYTHONPATH": str(repo_root / "src")}
    command = [sys.executable, "-m", "e2fgvi.stages.masks", "--index", "none.json", "--out", "m"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "none.json: index not found" in lines[0], result.stderr


@pytest.mark.parametrize("name", ["download", "pretrained", "prepare", "masks", "evaluate"])
def test_stage_modules_are_add_arguments_plus_run(name, repo_root):
    """Each stage builds its parser on demand (e2fgvi.entry runs it); no module-level parser."""
    module = importlib.import_module(f"e2fgvi.stages.{name}")
    assert callable(module.add_arguments) and callable(module.run)
    assert not hasattr(module, "parser") and not hasattr(module, "main")
    help_text = subprocess.run(
        [sys.executable, "-m", f"e2fgvi.stages.{name}", "--help"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(repo_root / "src")},
    ).stdout  # fmt: skip
    assert help_text.startswith(f"usage: python -m e2fgvi.stages.{name}") and "--out" in help_text
