"""State dicts as weight files hold them: unwrapping, layout comparison, variant detection.

A leaf of the model package: it imports no network module. Files are read by
``e2fgvi.weights.read_weights`` (weights_only); joining a network with its weights is
``e2fgvi.model.build``. Every problem is a one-line ``UserError`` naming the file and the first
mismatching keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from e2fgvi.errors import UserError
from e2fgvi.weights import CHECKPOINT_FORMAT

_SHOWN = 3  # mismatching keys named in one error line

# The soft-composition keys tell the variants apart: a 3x3 conv (HQ) or a fixed-grid bias.
_VARIANT_MARKERS = (("sc.bias_conv.weight", "e2fgvi_hq"), ("sc.bias", "e2fgvi"))


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


def generator_state(obj: Any, path: Path) -> dict[str, Tensor]:
    """The generator tensors of an official release or an e2fgvi-repro checkpoint (unvalidated).

    Our checkpoints nest the state under ``generator``; a DDP-saved state has ``module.`` keys.
    """
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj.get("generator")
    if not _tensors_only(obj):
        raise UserError(
            f"{path}: not a generator state_dict (expected a mapping of tensors, or an "
            f"e2fgvi-repro checkpoint with format {CHECKPOINT_FORMAT!r} and key 'generator')"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def spynet_state(obj: Any, path: Path) -> dict[str, Tensor]:
    """The ``basic_module.*`` tensors of an OpenMMLab / BasicSR SPyNet file (unvalidated).

    Accepts a plain mapping or one nested under 'state_dict' / 'params', with or without a
    'module.' prefix; 'mean'/'std' buffers, if present, are dropped (ours are constants).
    """
    for wrapper in ("state_dict", "params"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not _tensors_only(obj):
        raise UserError(f"{path}: not a SPyNet state_dict (expected a mapping of tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items() if k not in ("mean", "std")}


def _tensor_keys(obj: Any) -> set[str]:
    """Tensor keys of a mapping and of the mappings nested in it, without a DDP prefix."""
    if not isinstance(obj, Mapping):
        return set()
    keys = {k.removeprefix("module.") for k, v in obj.items() if isinstance(v, Tensor)}
    for value in obj.values():
        keys |= _tensor_keys(value)
    return keys


def stored_variant(obj: Any) -> str | None:
    """Which generator variant a loaded weight file holds; None when it holds neither."""
    keys = _tensor_keys(obj)
    return next((variant for key, variant in _VARIANT_MARKERS if key in keys), None)
