"""Shared fixtures: the repository root, its params, and skipping GPU tests without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def params():
    from e2fgvi.config import load_params

    return load_params(ROOT / "params.yaml")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory, params) -> Path:
    """The embedded sample, built and prepared as the download and prepare stages do."""
    from e2fgvi.data.prepare import prepare_dataset
    from e2fgvi.data.sample import build_sample

    root = tmp_path_factory.mktemp("sample")
    build_sample(root / "raw", params.data.sample)
    clip_frames = params.train.num_local_frames + params.train.num_ref_frames
    prepare_dataset(
        root / "raw", root / "youtube-vos", params.prepare, min_train_frames=clip_frames
    )
    return root / "youtube-vos"


def write_params(folder: Path, **overrides) -> Path:
    """The repository's params.yaml with dotted-key overrides (``train__lr=...``) in ``folder``."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for part in parents:
            node = node[part]
        assert leaf in node, f"no such param {dotted}"
        node[leaf] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def copy_repo(dest: Path) -> Path:
    """The repository's tracked (and new, not ignored) files as a fresh one-commit git repo."""
    import shutil
    import subprocess

    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    for name in listed.stdout.splitlines():
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def git_commit_all(folder: Path) -> None:
    import subprocess

    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run([*git, *command], cwd=folder, check=True)
