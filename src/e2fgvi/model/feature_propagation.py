"""Flow-guided feature propagation (E2FGVI §3.2; reference §3.3).

BasicVSR++-style second-order grid propagation over the local frames' features: a backward branch
(last frame to first) then a forward branch, each aligning the propagated feature to the current
frame with flow-guided deformable convolution (DCNv2, 16 offset groups), then a 1x1 fusion of both
branches plus a residual. The deformable conv runs through ``torchvision.ops.deform_conv2d`` by
default, which takes mmcv's tensors unchanged: per offset group, for each kernel point
(row-major), (dy, dx); ``use_deform_conv(module, "sampled")`` switches every alignment to the
same operation written with ``grid_sample`` + matmul (``e2fgvi.model.deform_conv``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from e2fgvi.model.deform_conv import FORMULATIONS, DeformConv, modulated_deform_conv3x3
from e2fgvi.model.spynet import flow_warp

BRANCHES = ("backward_", "forward_")


class SecondOrderDeformableAlignment(nn.Module):
    """Align [first-order, second-order] features (2c ch) to the current frame; outputs c ch.

    Offsets are learned residuals (bounded by ``max_residue_magnitude``) on top of the flows; the
    first half of the offset groups follows the first-order flow, the second half the
    second-order flow.
    """

    def __init__(
        self, channels: int = 128, deform_groups: int = 16, max_residue_magnitude: float = 10.0
    ) -> None:
        super().__init__()
        self.deform_groups = deform_groups
        self.formulation: DeformConv = "torchvision"  # not state: checkpoints are unaffected
        self.max_residue_magnitude = max_residue_magnitude
        self.weight = nn.Parameter(torch.empty(channels, 2 * channels, 3, 3))
        self.bias = nn.Parameter(torch.empty(channels))
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * channels + 4, channels, 3, 1, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, 27 * deform_groups, 3, 1, 1),  # 9 x (dy, dx, mask) per group
        )
        self.reset_dcn_parameters()
        self.zero_offset_head()

    def reset_dcn_parameters(self) -> None:
        """mmcv ModulatedDeformConv2d init: weight ~ U(+-1/sqrt(c_in * 3 * 3)), zero bias."""
        bound = 1.0 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)

    def zero_offset_head(self) -> None:
        """Start from pure flow-guided sampling: zero residual offsets, mask 0.5."""
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(self, x: Tensor, extra_feat: Tensor, flow_1: Tensor, flow_2: Tensor) -> Tensor:
        """x (n, 2c, h, w); extra_feat (n, 3c, h, w); flows (n, 2, h, w) as (dx, dy)."""
        out = self.conv_offset(torch.cat([extra_feat, flow_1, flow_2], dim=1))
        o1, o2, mask_logits = out.chunk(3, dim=1)

        # Offsets: bounded residual + flow, flipped to (dy, dx) and tiled over 9 taps x 8 groups.
        offset = self.max_residue_magnitude * torch.tanh(torch.cat([o1, o2], dim=1))
        offset_1, offset_2 = offset.chunk(2, dim=1)
        taps = offset_1.shape[1] // 2
        offset_1 = offset_1 + flow_1.flip(1).repeat(1, taps, 1, 1)
        offset_2 = offset_2 + flow_2.flip(1).repeat(1, taps, 1, 1)
        offset = torch.cat([offset_1, offset_2], dim=1)
        mask = torch.sigmoid(mask_logits)

        aligned = modulated_deform_conv3x3(
            x, offset, self.weight, self.bias, mask, formulation=self.formulation
        )
        return aligned.to(x.dtype)


def use_deform_conv(module: nn.Module, formulation: DeformConv) -> int:
    """Set every deformable alignment inside ``module`` to ``formulation``; returns how many."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown deformable conv formulation {formulation!r}")
    found = [m for m in module.modules() if isinstance(m, SecondOrderDeformableAlignment)]
    for align in found:
        align.formulation = formulation
    return len(found)


def _backbone(in_channels: int, channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, 1, 1),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(channels, channels, 3, 1, 1),
    )


class BidirectionalPropagation(nn.Module):
    """Second-order bidirectional propagation of local features (b, t, c, h, w)."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.channels = channels
        self.deform_align = nn.ModuleDict(
            {name: SecondOrderDeformableAlignment(channels) for name in BRANCHES}
        )
        self.backbone = nn.ModuleDict(
            {name: _backbone((2 + i) * channels, channels) for i, name in enumerate(BRANCHES)}
        )
        self.fusion = nn.Conv2d(2 * channels, channels, 1, 1, 0)

    def forward(self, feats: Tensor, flows_forward: Tensor, flows_backward: Tensor) -> Tensor:
        """feats (b, t, c, h, w); flows (b, t-1, 2, h, w): forward = i -> i+1, backward = i+1 -> i.

        The backward branch warps with the forward flows and the forward branch with the
        backward flows (each pulls the previously visited frame onto the current one).
        """
        frames = list(feats.unbind(dim=1))
        backward = self._propagate("backward_", frames, flows_forward, earlier=None)
        forward = self._propagate("forward_", frames, flows_backward, earlier=backward)
        fused = [
            self.fusion(torch.cat([bwd, fwd], dim=1))
            for bwd, fwd in zip(backward, forward, strict=True)
        ]
        return torch.stack(fused, dim=1) + feats

    def _propagate(
        self, branch: str, frames: list[Tensor], flows: Tensor, earlier: list[Tensor] | None
    ) -> list[Tensor]:
        """One branch; returns its per-frame features in chronological order."""
        t = len(frames)
        order = range(t - 1, -1, -1) if branch == "backward_" else range(t)
        outputs: list[Tensor] = []
        feat_prop = frames[0].new_zeros(frames[0].shape)
        for step, idx in enumerate(order):
            current = frames[idx]
            if step > 0:
                feat_prop = self._align(branch, step, feat_prop, current, outputs, flows)
            context = [current] + ([earlier[idx]] if earlier is not None else []) + [feat_prop]
            feat_prop = feat_prop + self.backbone[branch](torch.cat(context, dim=1))
            outputs.append(feat_prop)
        return outputs[::-1] if branch == "backward_" else outputs

    def _align(
        self,
        branch: str,
        step: int,
        feat_prop: Tensor,
        current: Tensor,
        outputs: list[Tensor],
        flows: Tensor,
    ) -> Tensor:
        """Deformable alignment of the previous (and second-previous) branch output.

        Official quirk kept on purpose: the flow index is ``step - 1`` in BOTH branches, so the
        backward branch (visiting frames in reverse) pairs frame t-1-step with flow step-1
        rather than with the flow at that frame. The released weights were trained this way.
        """
        flow_n1 = flows[:, step - 1]
        cond_n1 = flow_warp(feat_prop, flow_n1)
        if step > 1:
            feat_n2 = outputs[-2]
            # Second-order flow composed through the first-order one.
            flow_n2 = flow_n1 + flow_warp(flows[:, step - 2], flow_n1)
            cond_n2 = flow_warp(feat_n2, flow_n2)
        else:
            feat_n2 = torch.zeros_like(feat_prop)
            flow_n2 = torch.zeros_like(flow_n1)
            cond_n2 = torch.zeros_like(cond_n1)
        cond = torch.cat([cond_n1, current, cond_n2], dim=1)
        return self.deform_align[branch](
            torch.cat([feat_prop, feat_n2], dim=1), cond, flow_n1, flow_n2
        )
