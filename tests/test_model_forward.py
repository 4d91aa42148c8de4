"""Forward/backward behaviour of the generator and discriminator (small HQ inputs on CPU)."""

from __future__ import annotations

import pytest
import torch

from e2fgvi.errors import UserError
from e2fgvi.model import (
    Discriminator,
    InpaintGenerator,
    check_input_size,
    crop_to_size,
    hq_pad_size,
    pad_frames_for_hq,
)
from e2fgvi.train.losses import discriminator_hinge_loss, generator_adversarial_loss


def _frames(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, h, w, generator=gen) * 2 - 1


@pytest.fixture(scope="module")
def hq():
    torch.manual_seed(0)
    return InpaintGenerator("e2fgvi_hq")


def test_hq_output_shapes(hq):
    with torch.no_grad():
        out, (fwd, bwd) = hq(_frames(1, 3, 60, 108), 2)
    assert out.shape == (3, 3, 60, 108)
    assert fwd.shape == bwd.shape == (1, 1, 2, 15, 27)
    assert out.abs().max() < 1  # tanh


def test_hq_runs_at_a_larger_token_grid(hq):
    with torch.no_grad():
        out, (fwd, _) = hq(_frames(1, 2, 120, 216), 2)  # 2x2 attention windows, pooled padding
    assert out.shape == (2, 3, 120, 216) and fwd.shape == (1, 1, 2, 30, 54)


def test_batch_elements_do_not_mix(hq):
    a, b = _frames(1, 3, 60, 108, seed=1), _frames(1, 3, 60, 108, seed=2)
    with torch.no_grad():
        joint, (fwd, _) = hq(torch.cat([a, b]), 2)
        alone, (fwd_b, _) = hq(b, 2)
    assert torch.allclose(joint[3:], alone, atol=1e-5)
    assert torch.allclose(fwd[1:], fwd_b, atol=1e-5)


def test_one_local_frame_has_empty_flows(hq):
    with torch.no_grad():
        out, (fwd, _) = hq(_frames(1, 2, 60, 108), 1)
    assert out.shape == (2, 3, 60, 108) and fwd.shape == (1, 0, 2, 15, 27)


def test_every_parameter_gets_a_gradient_in_one_g_and_d_step():
    torch.manual_seed(0)
    generator, discriminator = InpaintGenerator("e2fgvi_hq"), Discriminator()
    frames = _frames(1, 3, 60, 108)
    pred, flows = generator(frames, 2)
    pred = pred.reshape(frames.shape)
    d_loss = discriminator_hinge_loss(discriminator(frames), discriminator(pred.detach()))
    d_loss.backward()
    g_loss = generator_adversarial_loss(discriminator(pred)) + pred.abs().mean()
    g_loss = g_loss + flows[0].abs().mean() + flows[1].abs().mean()
    g_loss.backward()
    for model in (generator, discriminator):
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Zero-initialised offset heads block the gradient to the layers before them at step 0;
    # everything else must get a non-zero gradient.
    blocked = (".conv_offset.0.", ".conv_offset.2.", ".conv_offset.4.")
    zero = [
        name
        for model in (generator, discriminator)
        for name, p in model.named_parameters()
        if not any(b in name for b in blocked) and torch.all(p.grad == 0)
    ]
    assert not zero


def test_same_seed_same_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(11)
        model = InpaintGenerator("e2fgvi_hq")
        with torch.no_grad():
            outs.append(model(_frames(1, 2, 60, 108), 2)[0])
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize(
    ("variant", "h", "w", "match"),
    [
        ("e2fgvi", 60, 108, "E2FGVI takes exactly 240x432"),
        ("e2fgvi_hq", 64, 108, r"E2FGVI-HQ cannot take 64x108 .*\(6, 9\)"),
        ("e2fgvi_hq", 62, 108, "multiples of 4"),
    ],
)
def test_wrong_size_is_one_clear_error(variant, h, w, match):
    with pytest.raises(UserError, match=match) as err:
        check_input_size(variant, h, w)
    assert "\n" not in str(err.value)


def test_generator_rejects_bad_inputs(hq):
    with pytest.raises(UserError, match="cannot take"):
        hq(_frames(1, 2, 64, 112), 2)
    with pytest.raises(UserError, match="num_local_frames"):
        hq(_frames(1, 2, 60, 108), 3)
    with pytest.raises(UserError, match=r"\(B, T, 3, H, W\)"):
        hq(torch.zeros(2, 3, 60, 108), 2)
    with pytest.raises(UserError, match="unknown model variant"):
        InpaintGenerator("e2fgvi_xl")


@pytest.mark.parametrize(("h", "w", "padded"), [(240, 432, (240, 432)), (100, 200, (120, 216))])
def test_hq_mirror_padding_round_trip(h, w, padded):
    assert hq_pad_size(h, w) == padded
    frames = _frames(1, 2, h, w)
    out, size = pad_frames_for_hq(frames)
    assert out.shape[-2:] == padded and size == (h, w)
    check_input_size("e2fgvi_hq", *padded)
    assert torch.equal(crop_to_size(out, size), frames)
    if padded[0] > h:  # the padding mirrors the last rows (symmetric, edge row repeated)
        assert torch.equal(out[..., h, :w], frames[..., h - 1, :])
        assert torch.equal(out[..., h + 1, :w], frames[..., h - 2, :])


def test_small_frames_pad_beyond_one_mirror():
    out, _ = pad_frames_for_hq(_frames(1, 1, 20, 30))
    assert out.shape[-2:] == (60, 108)


def test_channels_last_matches_contiguous(hq):
    frames = _frames(1, 3, 60, 108)
    with torch.no_grad():
        ref, _ = hq(frames, 2)
        fast = InpaintGenerator("e2fgvi_hq")
        fast.load_state_dict(hq.state_dict())
        fast = fast.to(memory_format=torch.channels_last)
        out, _ = fast(frames, 2)
    assert torch.allclose(out, ref, atol=1e-5)


def test_bf16_autocast_on_cpu_runs_the_forward(hq):
    """deform_conv2d has no CPU bf16 kernel; the alignment module runs it in fp32 itself."""
    frames = _frames(1, 3, 60, 108)
    with torch.no_grad():
        ref, _ = hq(frames, 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = hq(frames, 2)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().max() < 0.02


@pytest.mark.slow
def test_e2fgvi_forward_at_240x432():
    torch.manual_seed(0)
    model = InpaintGenerator("e2fgvi")
    with torch.no_grad():
        out, (fwd, bwd) = model(_frames(1, 2, 240, 432), 2)
    assert out.shape == (2, 3, 240, 432) and fwd.shape == bwd.shape == (1, 1, 2, 60, 108)


def _gpu_models():
    torch.manual_seed(0)
    reference = InpaintGenerator("e2fgvi_hq").cuda().eval()
    return reference, _frames(2, 5, 240, 432).cuda()


@pytest.mark.gpu
def test_gpu_bf16_channels_last_close_to_fp32():
    reference, frames = _gpu_models()
    with torch.no_grad():
        ref, (ref_fwd, _) = reference(frames, 3)
        fast = reference.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, (fwd, _) = fast(frames, 3)
    # bf16 keeps ~3 significant digits; with N(0, 0.02) init the outputs are small.
    assert (out.float() - ref).abs().max() < 0.05
    assert (fwd.float() - ref_fwd).abs().max() < 0.05 * max(1.0, ref_fwd.abs().max().item())


@pytest.mark.gpu
def test_gpu_forward_and_backward_do_not_sync_with_the_host():
    reference, frames = _gpu_models()
    reference.train()
    reference(frames, 3)  # warm-up: lazy inits may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, flows = reference(frames, 3)
        (out.float().mean() + flows[0].float().mean()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
