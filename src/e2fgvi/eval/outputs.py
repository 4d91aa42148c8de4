"""Write an evaluation's files (metrics JSON, per-video CSV, strip PNG) and log it to MLflow."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from e2fgvi.atomic import write_json, write_text
from e2fgvi.eval.evaluate import EvalReport
from e2fgvi.eval.strip import write_png
from e2fgvi.metricsfile import flat_numbers
from e2fgvi.tracking import attach, stage_uri

log = logging.getLogger(__name__)

METRICS_FILE, VIDEOS_FILE, STRIP_FILE = "metrics.json", "per_video.csv", "strip.png"
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
) -> bool:
    """Attach to the train stage's run (``tracking.read_run_reference``) and log eval/* to it.

    Returns True when everything reached MLflow (otherwise it is spooled or logged as lost).
    """
    run_id, recorded_uri, spool = reference
    logger = attach(stage_uri(mlruns, recorded_uri), run_id, spool)
    summary = report.summary()
    names = ("psnr", "ssim", "vfid", "frames", "fps")
    logger.log_metrics({f"eval/{k}": summary[k] for k in names}, step=0)
    logger.set_tags({"eval/vfid_note": summary["vfid_note"] or "none", **tags})
    for path in files.values():
        if path.exists():
            logger.log_artifact(path, "eval")
    return logger.close()
