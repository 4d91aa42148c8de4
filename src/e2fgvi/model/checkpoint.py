"""Reading weight files safely: official E2FGVI releases, our checkpoints, pretrained SPyNet.

Every file goes through ``torch.load(weights_only=True)``, so a pickle that carries code is
refused before anything in it runs. Layout problems become one-line ``UserError``s naming the
file and the first mismatching keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from e2fgvi.errors import UserError
from e2fgvi.model.sizes import VARIANTS, check_variant
from e2fgvi.weights import CHECKPOINT_FORMAT, read_weights

_SHOWN = 3  # mismatching keys named in one error line


def _tensors_only(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _first(keys: set[str]) -> str:
    shown = sorted(keys)[:_SHOWN]
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(shown) + more


def describe_mismatch(state: Mapping[str, Tensor], expected: Mapping[str, torch.Size]) -> str:
    """'' if names and shapes match, else a short description of the first differences."""
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    reshaped = {
        k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k])
    }
    parts = []
    if missing:
        parts.append(f"missing keys {_first(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_first(unexpected)}")
    if reshaped:
        parts.append(f"wrong shapes for {_first(reshaped)}")
    return "; ".join(parts)


def generator_layout(variant: str) -> dict[str, torch.Size]:
    """State-dict key -> shape of ``InpaintGenerator(variant)``, built on the meta device."""
    from e2fgvi.model.generator import InpaintGenerator

    check_variant(variant)
    with torch.device("meta"):
        model = InpaintGenerator(variant)
    return {k: v.shape for k, v in model.state_dict().items()}


def _unwrap_generator(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj.get("generator")
    if not _tensors_only(obj):
        raise UserError(
            f"{path}: not a generator state_dict (expected a mapping of tensors, or an "
            f"e2fgvi-repro checkpoint with format {CHECKPOINT_FORMAT!r} and key 'generator')"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_generator_state(path: str | Path, variant: str) -> dict[str, Tensor]:
    """Generator state_dict from an official release file or an e2fgvi-repro checkpoint.

    The result loads into ``InpaintGenerator(variant)`` with ``strict=True``.
    """
    path = Path(path)
    check_variant(variant)
    state = _unwrap_generator(read_weights(path), path)
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


def spynet_layout() -> dict[str, torch.Size]:
    """Keys of the OpenMMLab SPyNet file: the 6x5 basic-module convs (no mean/std buffers)."""
    from e2fgvi.model.spynet import SPyNet

    with torch.device("meta"):
        model = SPyNet()
    return {f"basic_module.{k}": v.shape for k, v in model.basic_module.state_dict().items()}


def read_spynet_state(path: str | Path) -> dict[str, Tensor]:
    """The 60 ``basic_module.*`` tensors of ``spynet_20210409-c6c1bd09.pth`` (or a re-save).

    Accepts a plain mapping or one nested under 'state_dict' / 'params' (OpenMMLab / BasicSR),
    with or without a 'module.' prefix; 'mean'/'std' buffers, if present, are ignored.
    """
    path = Path(path)
    obj = read_weights(path)
    for wrapper in ("state_dict", "params"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not _tensors_only(obj):
        raise UserError(f"{path}: not a SPyNet state_dict (expected a mapping of tensors)")
    state = {k.removeprefix("module."): v for k, v in obj.items() if k not in ("mean", "std")}
    mismatch = describe_mismatch(state, spynet_layout())
    if mismatch:
        raise UserError(f"{path}: not the OpenMMLab SPyNet layout ({mismatch})")
    return state
