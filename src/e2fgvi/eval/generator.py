"""Turn a generator checkpoint into the ``WindowModel`` the evaluation protocol calls.

E2FGVI only runs at 240x432; E2FGVI-HQ runs at any size after the official mirror padding to
multiples of 60x108, with the output cropped back (reference §3.7).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
            masked, _ = pad_frames_for_hq(masked)
        elif (w, h) != E2FGVI_SIZE:
            raise UserError(f"variant e2fgvi runs only at 432x240 frames, got {w}x{h}")
        pred, _ = generator(masked, num_local)
        return pred[:, :, :h, :w]

    return run


def _state_keys(obj: object) -> set[str]:
    """Tensor keys of a state_dict, also when it is nested one level (e.g. {"generator": …})."""
    if not isinstance(obj, Mapping):
        return set()
    # a DDP-saved state carries a "module." prefix
    keys = {k.removeprefix("module.") for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for value in obj.values():
        keys |= _state_keys(value) if isinstance(value, Mapping) else set()
    return keys


def checkpoint_variant(checkpoint: Path) -> str | None:
    """Which variant a checkpoint holds: HQ has ``sc.bias_conv.*``, E2FGVI ``sc.bias``."""
    from e2fgvi.model.checkpoint import read_weights

    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: checkpoint not found; train first or fix the path")
    # read_weights: weights_only=True, and one line (torch's own refusal text is six lines).
    keys = _state_keys(read_weights(checkpoint))
    if "sc.bias_conv.weight" in keys:
        return "e2fgvi_hq"
    return "e2fgvi" if "sc.bias" in keys else None


def load_window_model(
    checkpoint: Path, variant: str | None, device: torch.device
) -> tuple[WindowModel, str]:
    """Build the generator, load ``checkpoint`` strictly, eval mode; ``variant`` None = detect.

    A checkpoint of the other variant, or of no E2FGVI generator at all, is a one-line UserError.
    """
    found = checkpoint_variant(checkpoint)
    if found is None:
        raise UserError(f"{checkpoint}: not an E2FGVI generator checkpoint (no sc.bias* keys)")
    if variant is not None and variant != found:
        raise UserError(
            f"{checkpoint}: holds an {found} generator, not {variant}; use variant {found}"
        )
    from e2fgvi.model import InpaintGenerator, load_generator_state

    generator = InpaintGenerator(variant=found)
    generator.load_state_dict(load_generator_state(checkpoint, found), strict=True)
    generator.eval().to(device)
    log.info("generator %s loaded from %s on %s", found, checkpoint, device)
    return as_window_model(generator, found), found


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device here; use --device cpu")
    return torch.device(name)
