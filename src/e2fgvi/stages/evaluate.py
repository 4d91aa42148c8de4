"""DVC stage evaluate: score the trained generator on the test split like the paper.

The scores go to the training run, and the generator goes with them as an MLflow model,
registered under ``tracking.registered_model``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from e2fgvi.config import EvalParams, load_params, params_hash
from e2fgvi.devices import pick_device
from e2fgvi.entry import run_module
from e2fgvi.errors import UserError
from e2fgvi.eval.evaluate import evaluate
from e2fgvi.eval.generator import E2FGVI_SIZE, load_window_model
from e2fgvi.eval.i3d import load_i3d
from e2fgvi.eval.inpainter import load_inpainter
from e2fgvi.eval.outputs import log_to_mlflow, model_record, write_example, write_outputs
from e2fgvi.tracking import read_run_reference

log = logging.getLogger("e2fgvi.stages.evaluate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="prepared YouTube-VOS folder")
    parser.add_argument("--checkpoint", type=Path, required=True, help="generator state_dict")
    parser.add_argument("--pretrained", type=Path, required=True, help="I3D rgb_imagenet.pt file")
    parser.add_argument("--run", type=Path, required=True, help="the train stage's mlflow_run.json")
    parser.add_argument("--mlruns", type=Path, required=True, help="MLflow store folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics, CSV and strip")


def check_eval_params(variant: str, cfg: EvalParams) -> None:
    """Refuse a frame size or SSIM window the chosen variant cannot score, before any work."""
    if variant == "e2fgvi" and (cfg.width, cfg.height) != E2FGVI_SIZE:
        raise UserError(
            f"params.yaml: eval.width/height {cfg.width}x{cfg.height} cannot run variant e2fgvi "
            "(432x240 only); set them to 432/240 or use model.variant e2fgvi_hq"
        )
    side = min(cfg.width, cfg.height)
    if cfg.ssim_window % 2 == 0 or cfg.ssim_window > side:
        raise UserError(
            f"params.yaml: eval.ssim_window {cfg.ssim_window} must be odd and at most the "
            f"shorter side of eval.width/height ({side}); the official value is 65 at 432x240"
        )


def run(args: argparse.Namespace) -> None:
    params = load_params()
    variant, cfg = params.model.variant, params.eval
    check_eval_params(variant, cfg)
    run_info = read_run_reference(args.run)  # fail before the long part, not after it
    device = pick_device("auto")
    model, _ = load_window_model(args.checkpoint, variant, device)
    i3d, note = None, "VFID off (eval.vfid: false)"
    if cfg.vfid and args.pretrained.is_file():
        i3d = load_i3d(args.pretrained, device)
    elif cfg.vfid:
        note = f"VFID skipped: I3D weights not found at {args.pretrained} (no download at run time)"
    report = evaluate(args.data, model, cfg, device=device, i3d=i3d, i3d_note=note)
    tags = {"eval/variant": variant, "eval/device": device.type, "eval/params": params_hash(cfg)}
    labels = {"variant": variant, "size": f"{cfg.width}x{cfg.height}"}
    files = write_outputs(args.out, report, labels)
    shown = {k: v for k, v in report.summary().items() if k != "vfid_note"}
    log.info("evaluation: %s; %s", shown, report.vfid_note or "VFID ok")
    with tempfile.TemporaryDirectory() as tmp:  # the logger snapshots the example
        example = write_example(args.data, Path(tmp) / "example.npz")
        weights = {"generator": args.checkpoint, "example": example}
        registered = params.tracking.registered_model
        model = model_record(load_inpainter, weights, cfg, registered, report, labels)
        log_to_mlflow(run_info, args.mlruns, report, files, tags, model, labels["size"])


if __name__ == "__main__":
    run_module(sys.modules[__name__])
