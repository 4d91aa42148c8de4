"""Networks with their weights: the one place that joins a network to a weight file.

Builds the generator and the frozen flow-loss teacher from ``ModelParams``, and loads weight files
(official releases, our checkpoints, the OpenMMLab SPyNet) into them strictly. Officially both
SPyNets start from the OpenMMLab pretrained weights (docs/official-e2fgvi.md §3.2, §4); with
``model.spynet_init: random`` they start from mmcv's default init instead (no file needed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from e2fgvi.config import ModelParams
from e2fgvi.errors import UserError
from e2fgvi.model.checkpoint import describe_mismatch, generator_state, spynet_state, stored_variant
from e2fgvi.model.generator import InpaintGenerator
from e2fgvi.model.sizes import VARIANTS, check_variant
from e2fgvi.model.spynet import SPyNet
from e2fgvi.weights import read_weights

log = logging.getLogger(__name__)


def generator_layout(variant: str) -> dict[str, torch.Size]:
    """State-dict key -> shape of ``InpaintGenerator(variant)``, built on the meta device."""
    check_variant(variant)
    with torch.device("meta"):
        model = InpaintGenerator(variant)
    return {k: v.shape for k, v in model.state_dict().items()}


def spynet_layout() -> dict[str, torch.Size]:
    """Keys of the OpenMMLab SPyNet file: the 6x5 basic-module convs (no mean/std buffers)."""
    with torch.device("meta"):
        model = SPyNet()
    return {f"basic_module.{k}": v.shape for k, v in model.basic_module.state_dict().items()}


def _checked_generator_state(obj: Any, path: Path, variant: str) -> dict[str, Tensor]:
    """``obj``'s generator state if it fits ``variant``; else one line naming what differs."""
    state = generator_state(obj, path)
    mismatch = describe_mismatch(state, generator_layout(variant))
    if mismatch:
        other = next(v for v in VARIANTS if v != variant)
        hint = (
            f"it is an {other} checkpoint: set model.variant: {other}"
            if not describe_mismatch(state, generator_layout(other))
            else f"not an {variant} generator"
        )
        raise UserError(f"{path}: {hint} ({mismatch})")
    return state


def load_generator_state(path: str | Path, variant: str) -> dict[str, Tensor]:
    """Generator state_dict from an official release file or an e2fgvi-repro checkpoint.

    The result loads into ``InpaintGenerator(variant)`` with ``strict=True``.
    """
    check_variant(variant)
    return _checked_generator_state(read_weights(path), Path(path), variant)


def load_generator(path: str | Path, variant: str | None = None) -> tuple[InpaintGenerator, str]:
    """The generator a file holds, loaded strictly, in eval mode; ``variant`` None = detect.

    A file of the other variant, or of no E2FGVI generator at all, is a one-line UserError.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train first or fix the path")
    obj = read_weights(path)
    found = stored_variant(obj)
    if found is None:
        raise UserError(f"{path}: not an E2FGVI generator checkpoint (no sc.bias* keys)")
    if variant is not None and variant != found:
        raise UserError(f"{path}: holds an {found} generator, not {variant}; use variant {found}")
    generator = InpaintGenerator(variant=found)
    generator.load_state_dict(_checked_generator_state(obj, path, found), strict=True)
    return generator.eval(), found


def read_spynet_state(path: str | Path) -> dict[str, Tensor]:
    """The 60 ``basic_module.*`` tensors of ``spynet_20210409-c6c1bd09.pth`` (or a re-save)."""
    path = Path(path)
    state = spynet_state(read_weights(path), path)
    mismatch = describe_mismatch(state, spynet_layout())
    if mismatch:
        raise UserError(f"{path}: not the OpenMMLab SPyNet layout ({mismatch})")
    return state


def load_spynet_weights(spynet: SPyNet, path: str | Path) -> SPyNet:
    """Load the OpenMMLab SPyNet file into ``spynet`` in place, strictly; returns it."""
    state = read_spynet_state(path)
    spynet.basic_module.load_state_dict(
        {k.removeprefix("basic_module."): v for k, v in state.items()}, strict=True
    )
    return spynet


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
        load_spynet_weights(generator.update_spynet, path)
        log.info("generator SPyNet initialised from %s", path)
    return generator


def build_flow_teacher(cfg: ModelParams, spynet_path: str | Path | None) -> SPyNet:
    """The frozen SPyNet whose flows on clean frames are the flow-loss targets (eval mode)."""
    path = _pretrained_spynet_path(cfg, spynet_path)
    teacher = SPyNet()
    if path is not None:
        load_spynet_weights(teacher, path)
    teacher.requires_grad_(False)
    return teacher.eval()
