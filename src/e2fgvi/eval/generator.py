"""Turn a generator checkpoint into the ``WindowModel`` the evaluation protocol calls.

E2FGVI only runs at 240x432; E2FGVI-HQ runs at any size after the official mirror padding to
multiples of 60x108, with the output cropped back (docs/official-e2fgvi.md §3.7).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from e2fgvi.errors import UserError
from e2fgvi.eval.protocol import WindowModel
from e2fgvi.model.build import load_generator
from e2fgvi.model.sizes import pad_frames_for_hq

log = logging.getLogger(__name__)

E2FGVI_SIZE = (432, 240)  # (w, h) the plain variant's fixed token grid needs


def as_window_model(generator: torch.nn.Module, variant: str) -> WindowModel:
    """Wrap ``generator(masked, num_local) -> (pred, flows)`` as a padded, cropped WindowModel."""

    def run(masked: torch.Tensor, num_local: int) -> torch.Tensor:
        h, w = masked.shape[-2:]
        if variant == "e2fgvi_hq":
            masked, _ = pad_frames_for_hq(masked)
        elif (w, h) != E2FGVI_SIZE:
            raise UserError(f"variant e2fgvi runs only at 432x240 frames, got {w}x{h}")
        pred, _ = generator(masked, num_local)
        return pred[:, :, :h, :w]

    return run


def load_window_model(
    checkpoint: Path, variant: str | None, device: torch.device
) -> tuple[WindowModel, str]:
    """The checkpoint's generator (strict, eval mode) on ``device``; ``variant`` None = detect."""
    generator, found = load_generator(checkpoint, variant)
    generator.to(device)
    log.info("generator %s loaded from %s on %s", found, checkpoint, device)
    return as_window_model(generator, found), found
