"""Flow-guided feature propagation (E2FGVI §3.2; docs/official-e2fgvi.md §3.3).

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

    def forward(
        self, history: Tensor, guide: Tensor, flow_near: Tensor, flow_far: Tensor
    ) -> Tensor:
        """Sample ``history`` (n, 2c, h, w), the branch's previous two outputs, at flow-led offsets.

        ``guide`` (n, 3c, h, w) is what the offset head sees: both outputs warped onto the current
        frame around the current frame's own features. ``flow_near`` / ``flow_far`` (n, 2, h, w),
        as (dx, dy), reach the previous and the second-previous output.
        """
        head = self.conv_offset(torch.cat([guide, flow_near, flow_far], dim=1))  # (n, 27g, h, w)
        # Channels: 18g offsets as (dy, dx) per kernel tap per group, then 9g modulation logits.
        num_offsets = 2 * head.shape[1] // 3
        learned = self.max_residue_magnitude * torch.tanh(head[:, :num_offsets])
        offset = learned + self._flow_offsets(flow_near, flow_far, num_offsets)
        modulation = torch.sigmoid(head[:, num_offsets:])

        aligned = modulated_deform_conv3x3(
            history, offset, self.weight, self.bias, modulation, formulation=self.formulation
        )
        return aligned.to(history.dtype)

    @staticmethod
    def _flow_offsets(flow_near: Tensor, flow_far: Tensor, num_offsets: int) -> Tensor:
        """The offsets of pure flow warping: every tap of the first half of the groups moves by
        ``flow_near``, of the second half by ``flow_far``; (dx, dy) becomes the kernel's (dy, dx).
        """
        taps = num_offsets // 4  # (dy, dx) pairs per half
        halves = [flow.flip(1).repeat(1, taps, 1, 1) for flow in (flow_near, flow_far)]
        return torch.cat(halves, dim=1)


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
        backward = self._branch("backward_", frames, flows_forward, earlier=None)
        forward = self._branch("forward_", frames, flows_backward, earlier=backward)
        fused = [
            self.fusion(torch.cat([bwd, fwd], dim=1))
            for bwd, fwd in zip(backward, forward, strict=True)
        ]
        return torch.stack(fused, dim=1) + feats

    def _branch(
        self, branch: str, frames: list[Tensor], flows: Tensor, earlier: list[Tensor] | None
    ) -> list[Tensor]:
        """One branch; returns its per-frame features in chronological order.

        ``earlier`` is the other branch's result: the forward branch also sees it per frame.
        """
        visits = range(len(frames) - 1, -1, -1) if branch == "backward_" else range(len(frames))
        produced: list[Tensor] = []  # this branch's outputs, in visiting order
        for step, frame in enumerate(visits):
            if step == 0:
                carried = frames[frame].new_zeros(frames[frame].shape)
            else:
                carried = self._carry_over(branch, step, produced, frames[frame], flows)
            context = [frames[frame], *([earlier[frame]] if earlier is not None else []), carried]
            produced.append(carried + self.backbone[branch](torch.cat(context, dim=1)))
        return produced[::-1] if branch == "backward_" else produced

    def _carry_over(
        self, branch: str, step: int, produced: list[Tensor], frame: Tensor, flows: Tensor
    ) -> Tensor:
        """The branch's last output (and the one before it) aligned onto the current ``frame``.

        Official quirk kept on purpose: the flow index is ``step - 1`` in BOTH branches, so the
        backward branch (visiting frames in reverse) pairs frame t-1-step with flow step-1
        rather than with the flow at that frame. The released weights were trained this way.
        """
        near = produced[-1]
        flow_near = flows[:, step - 1]
        near_warped = flow_warp(near, flow_near)
        if step == 1:  # no second-previous output yet: it and its flow count as zeros
            far, flow_far = torch.zeros_like(near), torch.zeros_like(flow_near)
            far_warped = torch.zeros_like(near_warped)
        else:
            far = produced[-2]
            # The flow to two visits back chains the older flow through the newer one.
            flow_far = flow_near + flow_warp(flows[:, step - 2], flow_near)
            far_warped = flow_warp(far, flow_far)
        guide = torch.cat([near_warped, frame, far_warped], dim=1)
        history = torch.cat([near, far], dim=1)
        return self.deform_align[branch](history, guide, flow_near, flow_far)
