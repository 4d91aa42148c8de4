"""The training losses (docs/official-e2fgvi.md §4) against explicit computations."""

from __future__ import annotations

import pytest
import torch

from e2fgvi.config import LossParams
from e2fgvi.model import InpaintGenerator, SPyNet
from e2fgvi.train.losses import (
    discriminator_hinge_loss,
    flow_loss,
    generator_adversarial_loss,
    generator_loss_terms,
    hole_loss,
    teacher_flows,
    valid_loss,
)


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(2, 4, 3, 8, 10, generator=gen) * 2 - 1
    target = torch.rand(2, 4, 3, 8, 10, generator=gen) * 2 - 1
    mask = (torch.rand(2, 4, 1, 8, 10, generator=gen) > 0.7).float()
    return pred, target, mask


def test_hole_and_valid_are_batch_global_masked_means():
    pred, target, mask = _batch()
    hole = mask.expand_as(pred).bool()
    assert torch.allclose(hole_loss(pred, target, mask), (pred - target).abs()[hole].mean())
    assert torch.allclose(valid_loss(pred, target, mask), (pred - target).abs()[~hole].mean())


def test_empty_masks_give_zero_not_nan():
    pred, target, _ = _batch()
    zeros = torch.zeros(2, 4, 1, 8, 10)
    assert hole_loss(pred, target, zeros) == 0
    assert valid_loss(pred, target, 1 - zeros) == 0


def test_flow_loss_is_the_sum_of_two_plain_l1_means():
    gen = torch.Generator().manual_seed(1)
    pred = (torch.randn(2, 3, 2, 5, 6, generator=gen), torch.randn(2, 3, 2, 5, 6, generator=gen))
    gt = (torch.randn(2, 3, 2, 5, 6, generator=gen), torch.randn(2, 3, 2, 5, 6, generator=gen))
    want = (pred[0] - gt[0]).abs().mean() + (pred[1] - gt[1]).abs().mean()
    assert torch.allclose(flow_loss(pred, gt), want)


def test_hinge_losses():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2] -> 2.5/3; relu(1 + fake) = [0, 1, 2] -> 1.
    assert torch.isclose(discriminator_hinge_loss(real, fake), torch.tensor(0.5 * (2.5 / 3 + 1)))
    assert torch.isclose(generator_adversarial_loss(fake), torch.tensor(1 / 3))


def test_generator_loss_terms_weights_and_total():
    pred, target, mask = _batch()
    flows = (torch.ones(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2))
    gt = (torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2))
    weights = LossParams(hole_weight=2.0, valid_weight=0.5, flow_weight=3.0, adversarial_weight=0.1)
    logits = torch.full((1, 4, 128, 1, 1), -4.0)
    terms = generator_loss_terms(pred, target, mask, flows, gt, logits, weights)
    assert torch.isclose(terms["hole"], 2.0 * hole_loss(pred, target, mask))
    assert torch.isclose(terms["valid"], 0.5 * valid_loss(pred, target, mask))
    assert torch.isclose(terms["flow"], torch.tensor(3.0))
    assert torch.isclose(terms["adversarial"], torch.tensor(0.4))
    parts = terms["hole"] + terms["valid"] + terms["flow"] + terms["adversarial"]
    assert torch.isclose(terms["total"], parts)
    no_disc = generator_loss_terms(pred, target, mask, flows, gt, None, weights)
    assert "adversarial" not in no_disc
    assert torch.isclose(no_disc["total"], parts - terms["adversarial"])


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return InpaintGenerator("e2fgvi_hq").eval()


@pytest.mark.parametrize("l_t", [2, 3])
def test_teacher_flows_use_the_generator_preprocessing(generator, l_t):
    """With the generator's own SPyNet as teacher and unmasked frames the flows coincide."""
    teacher = SPyNet()
    teacher.load_state_dict(generator.update_spynet.state_dict())
    frames = torch.rand(1, 3, 3, 60, 108, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        _, flows = generator(frames, l_t)
    gt = teacher_flows(teacher.eval(), frames, l_t)
    assert gt[0].shape == (1, l_t - 1, 2, 15, 27) and not gt[0].requires_grad
    assert torch.equal(gt[0], flows[0]) and torch.equal(gt[1], flows[1])
