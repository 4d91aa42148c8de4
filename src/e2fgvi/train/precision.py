"""Speed switches: autocast dtype and loss scaling, TF32, cudnn.benchmark, channels_last, compile.

Every switch comes from ``TrainParams`` and is recorded by the trainer beside its timings.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from e2fgvi.config import TrainParams
from e2fgvi.cpufeatures import slow_bf16
from e2fgvi.errors import UserError
from e2fgvi.model import use_deform_conv

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def apply_backend_switches(cfg: TrainParams, device: torch.device) -> None:
    """Process-wide numerics switches (TF32, cudnn autotuning, deterministic algorithms)."""
    if cfg.amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    if warning := slow_bf16(cfg.amp, device.type):
        log.warning("%s", warning)  # runs, but never silently slow
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark and not cfg.deterministic
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        # warn_only: deform_conv2d's CUDA backward has no deterministic kernel.
        torch.use_deterministic_algorithms(True, warn_only=True)


def autocast(cfg: TrainParams, device: torch.device) -> Callable[[], Any]:
    """A factory of autocast contexts for the configured dtype (a no-op for fp32)."""
    if cfg.amp == "fp32":
        return contextlib.nullcontext
    dtype = _DTYPES[cfg.amp]
    return lambda: torch.autocast(device.type, dtype=dtype)


def grad_scaler(cfg: TrainParams, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only; bf16 and fp32 get a disabled scaler."""
    return torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")


_CHANNELS_LAST_LAYERS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)


def to_channels_last(module: torch.nn.Module) -> int:
    """Store every 2-D (transposed) convolution's weight channels-last; returns how many.

    Only 4-D convolutions: their outputs then come out channels-last too, and the layers after
    them follow. The discriminator's Conv3d (5-D weights) and the deformable alignment's weight
    (not a conv module) stay as they are.
    """
    layers = [m for m in module.modules() if isinstance(m, _CHANNELS_LAST_LAYERS)]
    for layer in layers:
        layer.to(memory_format=torch.channels_last)
    return len(layers)


def prepare_module(
    module: torch.nn.Module, cfg: TrainParams, device: torch.device
) -> torch.nn.Module:
    """Move to the device; apply channels_last and the deformable conv formulation."""
    module = module.to(device=device)
    if cfg.channels_last:
        to_channels_last(module)
    use_deform_conv(module, cfg.deform_conv)
    return module


def maybe_compile(module: torch.nn.Module, cfg: TrainParams) -> torch.nn.Module:
    if not cfg.compile:
        return module
    log.info("torch.compile(%s): the first steps include compilation time", type(module).__name__)
    return torch.compile(module)


def speed_tags(cfg: TrainParams, device: torch.device) -> dict[str, Any]:
    """Every speed switch, as logged beside the figures it affects."""
    return {
        "speed.amp": cfg.amp,
        "speed.tf32": cfg.tf32,
        "speed.cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "speed.channels_last": cfg.channels_last,
        "speed.compile": cfg.compile,
        "speed.deform_conv": cfg.deform_conv,
        "speed.decode": cfg.decode,
        "speed.deterministic": cfg.deterministic,
        "device.type": device.type,
    }
