"""The sampled deformable conv (grid_sample + matmul) against torchvision's deform_conv2d.

Same operation, so the forward output and the gradients of input, offset, weight, bias and mask
must agree: in float64 to 1e-10 relative (of each tensor's largest magnitude), in float32 to
1e-5. Random real-valued offsets never land exactly on an integer coordinate, where bilinear
sampling has a kink and each implementation would take a different one-sided derivative.
The offsets also push samples partly and wholly outside the frame (zeros there, on both sides).
"""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d

from e2fgvi.model import InpaintGenerator, use_deform_conv
from e2fgvi.model.deform_conv import deform_conv3x3_sampled, modulated_deform_conv3x3
from e2fgvi.model.feature_propagation import SecondOrderDeformableAlignment

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def _inputs(dtype: torch.dtype, n=2, c=16, g=4, h=7, w=9, c_out=6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, c, h, w, generator=gen)
    offset = 2.5 * torch.randn(n, 2 * g * 9, h, w, generator=gen)
    offset[:, :, 0, :] += 12.0 if h > 1 else 0.0  # the first row's samples fall below the frame
    offset[:, 1::2, :, 0] -= 1.5  # the first column's samples fall partly left of it
    mask = torch.rand(n, g * 9, h, w, generator=gen)
    weight = torch.randn(c_out, c, 3, 3, generator=gen) / 12
    bias = torch.randn(c_out, generator=gen)
    return [t.to(dtype).requires_grad_() for t in (x, offset, weight, bias, mask)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", [(7, 9), (1, 5)])
def test_sampled_equals_torchvision_forward_and_every_gradient(dtype, size):
    h, w = size
    ours, ref = _inputs(dtype, h=h, w=w), _inputs(dtype, h=h, w=w)
    out = deform_conv3x3_sampled(*ours)
    x, offset, weight, bias, mask = ref
    expected = deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    tol = TOLERANCE[dtype]
    assert out.dtype == dtype and out.shape == expected.shape
    scale = expected.abs().max()
    assert (out - expected).abs().max() <= tol * scale
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    for name, a, b in zip(("x", "offset", "weight", "bias", "mask"), ours, ref, strict=True):
        assert b.grad.abs().max() > 0, name
        assert (a.grad - b.grad).abs().max() <= tol * b.grad.abs().max(), name


def test_both_formulations_run_fp32_under_bf16_autocast():
    args = [t.detach() for t in _inputs(torch.float32)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = modulated_deform_conv3x3(*args, formulation="sampled")
        b = modulated_deform_conv3x3(*args, formulation="torchvision")
    assert a.dtype == b.dtype == torch.float32
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    with pytest.raises(ValueError, match="formulation"):
        modulated_deform_conv3x3(*args, formulation="mmcv")


def test_the_alignment_module_gives_the_same_output_either_way():
    torch.manual_seed(0)
    align = SecondOrderDeformableAlignment(channels=16, deform_groups=4)
    torch.nn.init.normal_(align.conv_offset[-1].weight, std=0.05)  # non-zero learned offsets
    x, extra = torch.randn(1, 32, 6, 10), torch.randn(1, 48, 6, 10)
    flow_1, flow_2 = 2 * torch.randn(1, 2, 6, 10), 2 * torch.randn(1, 2, 6, 10)
    reference = align(x, extra, flow_1, flow_2)
    assert use_deform_conv(align, "sampled") == 1 and align.formulation == "sampled"
    assert torch.allclose(align(x, extra, flow_1, flow_2), reference, rtol=0, atol=1e-5)


def test_the_switch_leaves_the_state_dict_layout_alone():
    generator = InpaintGenerator("e2fgvi_hq")
    before = {k: v.shape for k, v in generator.state_dict().items()}
    assert use_deform_conv(generator, "sampled") == 2  # the backward and forward branches
    assert {k: v.shape for k, v in generator.state_dict().items()} == before
    fresh = InpaintGenerator("e2fgvi_hq")
    fresh.load_state_dict(generator.state_dict(), strict=True)
    with pytest.raises(ValueError, match="formulation"):
        use_deform_conv(generator, "fast")
