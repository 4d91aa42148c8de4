"""Write an evaluation's files (metrics JSON, per-video CSV, strip PNG) and log it to MLflow.

With it goes the generator as an MLflow model (``model_record``): a pyfunc that runs
``e2fgvi.eval.inpainter`` on frames + masks, registered under ``tracking.registered_model`` with
these eval metrics on the version.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from e2fgvi.atomic import atomic_open, write_json, write_text
from e2fgvi.config import EvalParams
from e2fgvi.eval.evaluate import EvalReport
from e2fgvi.eval.strip import write_png
from e2fgvi.eval.testset import load_frames, load_masks, read_index
from e2fgvi.metricsfile import flat_numbers
from e2fgvi.tracking import attach, scored_sentence, stage_uri

log = logging.getLogger(__name__)

METRICS_FILE, VIDEOS_FILE, STRIP_FILE = "metrics.json", "per_video.csv", "strip.png"
_LOGGED = ("psnr", "ssim", "vfid", "frames", "fps")
# The model's input example: a few test frames at the smallest size E2FGVI-HQ runs at (a CPU
# runs it in seconds; the plain variant resizes it to 432x240 itself).
EXAMPLE_FRAMES, EXAMPLE_SIZE = 3, (108, 60)
# What the inpainter's code imports (distribution names), pinned to this environment's versions.
MODEL_REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "opencv-python-headless",
                      "pydantic", "PyYAML", "tqdm")  # fmt: skip
DETAILS_FILE = "details.json"


def write_outputs(out: Path, report: EvalReport, extra: dict[str, str]) -> dict[str, Path]:
    """metrics.json (the summary's numbers), details.json (summary, notes and ``extra`` labels),
    per_video.csv and strip.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    names = (METRICS_FILE, DETAILS_FILE, VIDEOS_FILE, STRIP_FILE)
    paths = {name: out / name for name in names}
    write_json(paths[METRICS_FILE], flat_numbers(report.summary()))
    write_json(paths[DETAILS_FILE], {**report.summary(), **extra})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "frames", "psnr", "ssim", "seconds"])
    for v in report.videos:
        writer.writerow([v.video, v.frames, f"{v.psnr:.6f}", f"{v.ssim:.6f}", f"{v.seconds:.3f}"])
    write_text(paths[VIDEOS_FILE], buffer.getvalue())
    if report.strip is not None:
        write_png(paths[STRIP_FILE], report.strip)
    return paths


def log_to_mlflow(
    reference: tuple[str, str | None, Path | None],
    mlruns: Path,
    report: EvalReport,
    files: dict[str, Path],
    tags: dict[str, str],
    model: dict[str, Any] | None = None,
    size: str = "",
) -> bool:
    """Attach to the train stage's run (``tracking.read_run_reference``) and log eval/* to it.

    ``model`` (``model_record``) is logged and registered after the metrics.

    Returns True when everything reached MLflow (otherwise it is spooled or logged as lost).
    """
    run_id, recorded_uri, spool = reference
    logger = attach(stage_uri(mlruns, recorded_uri), run_id, spool)
    summary = report.summary()
    logger.log_metrics({f"eval/{k}": summary[k] for k in _LOGGED}, step=0)
    logger.set_tags({"eval/vfid_note": summary["vfid_note"] or "none", **tags})
    scores = {k: summary[k] for k in ("psnr", "ssim", "vfid")}
    logger.set_note("scored", scored_sentence(scores, summary["videos"], size or "?"))
    for path in files.values():
        if path.exists():
            logger.log_artifact(path, "eval")
    if model is not None:
        logger.log_model(model)  # after the eval metrics: MLflow links step-0 metrics to it
    return logger.close()


def write_example(root: Path, path: Path) -> Path:
    """The model's input example: the first test video's first frames and raw holes (.npz)."""
    index = read_index(root)
    video = next(iter(index))
    frames = load_frames(root, video, index[video], EXAMPLE_SIZE)[:EXAMPLE_FRAMES]
    masks = load_masks(root, video, index[video], EXAMPLE_SIZE, 0)[:EXAMPLE_FRAMES]
    with atomic_open(path, "wb") as handle:
        np.savez_compressed(handle, frames=frames, masks=masks)
    return path


def model_record(
    loader: Callable[..., Any],
    files: dict[str, Path],
    cfg: EvalParams,
    registered_model: str,
    report: EvalReport,
    labels: dict[str, str],
) -> dict[str, Any]:
    """What ``RunLogger.log_model`` needs to log and register the generator.

    Args:
        loader: the inpainter factory the MLflow model calls with the generator file.
        files: ``generator`` (weights) and ``example`` (``write_example``).
        labels: variant and size, for the version's description and tags.
    """
    summary = report.summary()
    scores = {f"eval/{k}": f"{summary[k]:.4g}" for k in _LOGGED if summary[k] is not None}
    shown = {"psnr": "{:.2f} dB", "ssim": "{:.4f}", "vfid": "{:.4f}"}
    described = ", ".join(
        f"{k.upper()} " + (form.format(summary[k]) if summary[k] is not None else "not computed")
        for k, form in shown.items()
    )
    videos = summary["videos"]
    return {
        "files": {name: str(path) for name, path in files.items()},
        "loader": f"{loader.__module__}:{loader.__qualname__}",
        "params": {
            "neighbor_stride": cfg.neighbor_stride,
            "ref_length": cfg.ref_length,
            "dilation": cfg.mask_dilation,
        },
        "requirements": [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS],
        "registered_model": registered_model,
        "version_tags": {**scores, **{f"eval/{k}": v for k, v in labels.items()}},
        "description": (
            f"E2FGVI generator ({labels.get('variant', '?')}) scored on {videos} test "
            f"video{'s' * (videos != 1)} at {labels.get('size', '?')}: {described}"
        ),
    }
