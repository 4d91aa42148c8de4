"""The embedded sample, prepared as the pipeline prepares it, for benchmarks that train on it."""

from __future__ import annotations

from pathlib import Path

from e2fgvi.config import Params
from e2fgvi.data.frames import load_index
from e2fgvi.data.masks import write_eval_masks
from e2fgvi.data.prepare import prepare_dataset
from e2fgvi.data.sample import build_sample


def prepared_sample(work: Path, params: Params, eval_masks: bool = True) -> Path:
    """``work/youtube-vos``: the sample built, prepared and (optionally) with the fixed evaluation
    masks; reused when a previous call left it complete."""
    root = work / "youtube-vos"
    done = root / ("test_masks" if eval_masks else "train.json")
    if done.exists():
        return root
    build_sample(work / "raw", params.data.sample)
    clip_frames = params.train.num_local_frames + params.train.num_ref_frames
    prepare_dataset(work / "raw", root, params.prepare, min_train_frames=clip_frames)
    if eval_masks:
        write_eval_masks(load_index(root / "test.json"), root / "test_masks", params.masks)
    return root
