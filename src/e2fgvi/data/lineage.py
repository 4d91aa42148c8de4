"""The prepared data set as an MLflow run input: its DVC hash from dvc.lock, its source from params.

The digest is the hash DVC recorded for the prepared frames (the prepare stage's
``JPEGImages`` out in dvc.lock, ``<md5>.dir``: 36 characters, MLflow's digest limit), so a run's
dataset names exactly the data ``dvc checkout`` / ``dvc pull`` restores. The index files'
hashes, sizes and file counts go into the profile. The source only describes where the
archives came from (``data.source`` and the split locations); it never decides anything.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from e2fgvi.config import DataParams

log = logging.getLogger(__name__)

# The dataset's name says what the frames are: the embedded sample videos, or YouTube-VOS.
NAMES = {"sample": "e2fgvi-sample", "real": "youtube-vos"}
FRAMES, INDEXES = "JPEGImages", ("train.json", "test.json")


def _prepare_outs(lock: Path) -> dict[Path, dict[str, Any]]:
    """The prepare stage's outs in ``lock``: absolute path -> entry (empty when unknown)."""
    try:
        raw = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.info("dataset not logged: %s unreadable (%s)", lock, exc)
        return {}
    outs = (raw.get("stages") or {}).get("prepare", {}).get("outs") or []
    return {(lock.parent / out["path"]).resolve(): out for out in outs if "path" in out}


def dataset_name(data: DataParams, split: str = "train") -> str:
    """``e2fgvi-sample-train`` for the embedded sample, ``youtube-vos-train`` for real archives."""
    return f"{NAMES['sample' if data.source == 'sample' else 'real']}-{split}"


def data_label(data: DataParams, split: str = "train") -> str:
    """The data in words, for a run's description."""
    if data.source == "sample":
        return f"the embedded sample videos ({dataset_name(data, split)})"
    return f"YouTube-VOS, {split} split ({dataset_name(data, split)})"


def _source(data: DataParams) -> tuple[str, str]:
    """(source_type, source JSON) of the archives the prepared data came from."""
    if data.source == "sample":
        described = {"generator": "e2fgvi.data.sample", **data.sample.model_dump()}
        return "code", json.dumps(described)
    kind = "http" if data.source == "url" else "local"
    key = "url" if kind == "http" else "uri"
    where = {"train": data.train.location, "test": data.test.location}
    return kind, json.dumps({key: data.train.location, **where})


def prepared_dataset(lock: Path, root: Path, data: DataParams) -> dict[str, str] | None:
    """The MLflow dataset fields of the prepared folder ``root`` (None when dvc.lock lacks it)."""
    outs = _prepare_outs(lock)
    frames = outs.get((root / FRAMES).resolve())
    if frames is None or "md5" not in frames:
        log.info("dataset not logged: %s has no prepare out for %s", lock, root / FRAMES)
        return None
    profile = {
        name: {k: entry[k] for k in ("md5", "size", "nfiles") if k in entry}
        for name in (FRAMES, *INDEXES)
        if (entry := outs.get((root / name).resolve()))
    }
    source_type, source = _source(data)
    return {
        "name": dataset_name(data),
        "digest": frames["md5"],
        "source_type": source_type,
        "source": source,
        "profile": json.dumps({"dvc.lock": profile}),
    }
