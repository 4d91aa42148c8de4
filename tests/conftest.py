"""Shared fixtures and hooks: the repository root, its params, the prepared sample, GPU skips,
one real MLflow tracking server for the session.

Functions that tests import live in ``helpers.py``; nothing imports from this file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import ROOT


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


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory):
    """Make a named folder for a module's fixtures; it is removed when the module ends.

    Each training run leaves checkpoints of ~400 MB (the real model, optimizer state), and a
    repository copy after `dvc repro` several GB: kept to the session's end, they filled CI's disk.
    """
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


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


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """A real ``mlflow server`` (SQLite store, local artifacts) shared by the session's tests."""
    import mlflow_server

    folder = tmp_path_factory.mktemp("mlflow-server")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    running = mlflow_server.start(store, folder / "artifacts", folder / "server.log")
    yield running
    mlflow_server.stop(running.process)


@pytest.fixture(autouse=True)
def _tracking_uri_environment_kept():
    """Each test starts with the session's ``MLFLOW_TRACKING_URI``: MLflow's fluent API writes
    it into ``os.environ``, and a leak would send later tests' runs to another store."""
    import os

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
