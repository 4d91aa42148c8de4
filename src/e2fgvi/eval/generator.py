"""Turn a generator checkpoint into the ``WindowModel`` the evaluation protocol calls.

E2FGVI only runs at 240x432; E2FGVI-HQ runs at any size after the official mirror padding to
multiples of 60x108, with the output cropped back (reference §3.7).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from e2fgvi.errors import UserError
from e2fgvi.eval.protocol import WindowModel

log = logging.getLogger(__name__)

E2FGVI_SIZE = (432, 240)  # (w, h) the plain variant's fixed token grid needs


def as_window_model(generator: torch.nn.Module, variant: str) -> WindowModel:
    """Wrap ``generator(masked, num_local) -> (pred, flows)`` as a padded, cropped WindowModel."""
    from e2fgvi.model import pad_frames_for_hq

    def run(masked: torch.Tensor, num_local: int) -> torch.Tensor:
        h, w = masked.shape[-2:]
        if variant == "e2fgvi_hq":
            masked = pad_frames_for_hq(masked)
        elif (w, h) != E2FGVI_SIZE:
            raise UserError(f"variant e2fgvi runs only at 432x240 frames, got {w}x{h}")
        pred, _ = generator(masked, num_local)
        return pred[:, :, :h, :w]

    return run


def load_window_model(checkpoint: Path, variant: str, device: torch.device) -> WindowModel:
    """Build the generator of ``variant``, load ``checkpoint`` strictly, put it in eval mode."""
    from e2fgvi.model import InpaintGenerator, load_generator_state

    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: checkpoint not found; train first or pass --checkpoint")
    generator = InpaintGenerator(variant=variant)
    generator.load_state_dict(load_generator_state(checkpoint, variant), strict=True)
    generator.eval().to(device)
    log.info("generator %s loaded from %s on %s", variant, checkpoint, device)
    return as_window_model(generator, variant)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device here; use --device cpu")
    return torch.device(name)
