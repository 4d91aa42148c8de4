"""FLOPs of one training step, counted while it runs (the numerator of MFU).

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls and convolutions but not
torchvision's ``deform_conv2d`` (E2FGVI's feature alignment), so formulas for its forward and
backward are registered here. They count the same thing PyTorch counts for a convolution,
2 × multiply-accumulates of the im2col matrix product; the bilinear sampling of the offsets and
the mask multiply are not counted (as elementwise work is not counted for any op).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)


def deform_conv2d_flop(input_shape, weight_shape, *args: Any, out_shape=None, **kwargs) -> int:
    """Forward FLOPs of ``torchvision::deform_conv2d``: a conv over the sampled columns."""
    batch = input_shape[0]
    c_out, c_in_per_group, kh, kw = weight_shape
    h_out, w_out = out_shape[2], out_shape[3]
    return 2 * batch * c_out * h_out * w_out * c_in_per_group * kh * kw


def deform_conv2d_backward_flop(grad_shape, input_shape, weight_shape, *args: Any, **kwargs) -> int:
    """Backward FLOPs: gradient w.r.t. the columns plus w.r.t. the weight (2 × forward)."""
    forward = deform_conv2d_flop(input_shape, weight_shape, out_shape=grad_shape)
    return 2 * forward


def custom_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas of the ops torch does not count: torchvision's deformable convolution."""
    try:
        import torchvision  # noqa: F401 - registers torch.ops.torchvision
    except ImportError:
        return {}
    ops = torch.ops.torchvision
    return {
        ops.deform_conv2d: deform_conv2d_flop,
        ops._deform_conv2d_backward: deform_conv2d_backward_flop,
    }


def measure_step_flops(step_fn: Callable[[], Any]) -> float:
    """Run ``step_fn`` once (a real training step: forward, backward, optimiser) and count FLOPs.

    The step really happens (weights update), so a trainer can count its first step this way.
    """
    counter = FlopCounterMode(display=False, custom_mapping=custom_formulas())
    with counter:
        step_fn()
    total = float(counter.get_total_flops())
    log.debug("step FLOPs: %.3g (deform_conv2d included by registered formula)", total)
    return total
