"""E2FGVI training losses (paper §3.5; docs/official-e2fgvi.md §4), as pure functions.

All pixel losses are in [-1, 1] space over every frame (local and reference). Hole and valid
L1 are batch-global masked means (plain mean divided by the mean of the mask); the flow loss is an
unmasked L1 against flows of a frozen pretrained SPyNet on the clean local frames; the adversarial
terms are hinge losses on T-PatchGAN logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from e2fgvi.config import LossParams
from e2fgvi.model.spynet import SPyNet, bidirectional_flows


def _masked_l1(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    # mean(M) = 0 means nothing to average: the numerator is 0 too, so return 0, not NaN.
    return torch.mean(torch.abs(pred * weight - target * weight)) / weight.mean().clamp_min(1e-12)


def hole_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean |pred - target| over hole pixels (mask 1 = hole), pooled over the whole batch."""
    return _masked_l1(pred, target, mask)


def valid_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean |pred - target| over known pixels (mask 0), pooled over the whole batch."""
    return _masked_l1(pred, target, 1 - mask)


def flow_loss(pred_flows: tuple[Tensor, Tensor], gt_flows: tuple[Tensor, Tensor]) -> Tensor:
    """mean|f_pred - f_gt| + mean|b_pred - b_gt| over all flow elements."""
    return F.l1_loss(pred_flows[0], gt_flows[0]) + F.l1_loss(pred_flows[1], gt_flows[1])


def discriminator_hinge_terms(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """'real': mean relu(1 - D(real)), 'fake': mean relu(1 + D(fake)), 'total': half the sum."""
    real = F.relu(1 - real_logits).mean()
    fake = F.relu(1 + fake_logits).mean()
    return {"real": real, "fake": fake, "total": 0.5 * (real + fake)}


def discriminator_hinge_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """0.5 * (mean relu(1 - D(real)) + mean relu(1 + D(fake)))."""
    return discriminator_hinge_terms(real_logits, fake_logits)["total"]


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """-mean D(fake), with D already updated on this batch."""
    return -fake_logits.mean()


@torch.no_grad()
def teacher_flows(teacher: SPyNet, frames: Tensor, num_local_frames: int) -> tuple[Tensor, Tensor]:
    """Flow targets: the frozen SPyNet on the clean local frames (b, t, 3, H, W) in [-1, 1].

    Frames go to [0, 1] and 1/4 resolution through the same code the generator uses.
    """
    return bidirectional_flows(teacher, (frames[:, :num_local_frames] + 1) / 2)


def generator_loss_terms(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    pred_flows: tuple[Tensor, Tensor],
    gt_flows: tuple[Tensor, Tensor],
    fake_logits: Tensor | None,
    weights: LossParams,
) -> dict[str, Tensor]:
    """Weighted generator terms and their sum under 'total'.

    ``pred`` and ``target`` are (b, t, 3, H, W), ``mask`` (b, t, 1, H, W) with 1 = hole;
    ``fake_logits`` = D(composited frames) after the D step, or None without a discriminator.
    """
    terms = {
        "hole": weights.hole_weight * hole_loss(pred, target, mask),
        "valid": weights.valid_weight * valid_loss(pred, target, mask),
        "flow": weights.flow_weight * flow_loss(pred_flows, gt_flows),
    }
    if fake_logits is not None:
        terms["adversarial"] = weights.adversarial_weight * generator_adversarial_loss(fake_logits)
    terms["total"] = torch.stack(list(terms.values())).sum()
    return terms
