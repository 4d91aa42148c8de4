"""Building the networks from ``ModelParams``: the generator and the frozen flow-loss teacher.

Officially both SPyNets start from the OpenMMLab pretrained weights (reference §3.2, §4); with
``model.spynet_init: random`` they start from mmcv's default init instead (no file needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from e2fgvi.config import ModelParams
from e2fgvi.errors import UserError
from e2fgvi.model.generator import InpaintGenerator
from e2fgvi.model.spynet import SPyNet

log = logging.getLogger(__name__)


def _pretrained_spynet_path(cfg: ModelParams, spynet_path: str | Path | None) -> Path | None:
    """The file to load, None for random init; a missing file is a UserError with the fixes."""
    if cfg.spynet_init == "random":
        return None
    path = Path(spynet_path) if spynet_path is not None else None
    if path is None or not path.is_file():
        raise UserError(
            f"SPyNet weights not found at {path or '(no path given)'}: set "
            "data.pretrained.spynet.fetch: true and run `dvc repro pretrained`, "
            "or set model.spynet_init: random"
        )
    return path


def build_generator(cfg: ModelParams, spynet_path: str | Path | None) -> InpaintGenerator:
    """``InpaintGenerator(cfg.variant)`` with its SPyNet initialised as ``cfg.spynet_init`` says."""
    path = _pretrained_spynet_path(cfg, spynet_path)
    generator = InpaintGenerator(cfg.variant)
    if path is not None:
        generator.update_spynet.load_pretrained(path)
        log.info("generator SPyNet initialised from %s", path)
    return generator


def build_flow_teacher(cfg: ModelParams, spynet_path: str | Path | None) -> SPyNet:
    """The frozen SPyNet whose flows on clean frames are the flow-loss targets (eval mode)."""
    path = _pretrained_spynet_path(cfg, spynet_path)
    teacher = SPyNet()
    if path is not None:
        teacher.load_pretrained(path)
    teacher.requires_grad_(False)
    return teacher.eval()
