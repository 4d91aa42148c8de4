"""The flow-guided deformable convolution two ways: torchvision's kernel vs grid_sample + matmul.

    PYTHONPATH=src python benchmarks/dcn_formulations.py [--repeats 5] [--size 60x108]

E2FGVI's alignment (``SecondOrderDeformableAlignment``) is a modulated deformable 3x3 conv,
256 -> 128 channels, 16 offset groups, at 1/4 resolution (60x108 for 432x240), called 8 times
per clip (4 steps x 2 branches). torchvision's CPU kernel (deformable im2col / col2im, scalar
bilinear code) has no bfloat16 path, so under autocast it stays fp32. The same operation can be
written with stock ops: bilinear sampling of every (group, tap) with ``grid_sample``, times the
modulation mask, then one matmul with the weight. This script checks the two agree and times
forward + backward of each (fp32; the grid_sample one also in bf16 autocast).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from interleave import load_avg, machine, print_table
from torch import Tensor
from torchvision.ops import deform_conv2d


def deform_conv_by_sampling(
    x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor, mask: Tensor
) -> Tensor:
    """3x3, stride 1, padding 1 modulated deformable conv via ``grid_sample`` (zeros outside).

    offset (n, 2*g*9, h, w) holds (dy, dx) per group and tap, mask (n, g*9, h, w), as mmcv and
    torchvision lay them out.
    """
    n, c, h, w = x.shape
    g = offset.shape[1] // 18
    taps = torch.arange(9, device=x.device)
    base_y = (taps // 3 - 1).view(1, 1, 9, 1, 1) + torch.arange(h, device=x.device).view(
        1, 1, 1, h, 1
    )
    base_x = (taps % 3 - 1).view(1, 1, 9, 1, 1) + torch.arange(w, device=x.device).view(
        1, 1, 1, 1, w
    )
    off = offset.view(n, g, 9, 2, h, w)
    y = base_y + off[:, :, :, 0]  # (n, g, 9, h, w) sampling rows
    xx = base_x + off[:, :, :, 1]
    grid = torch.stack([2 * xx / (w - 1) - 1, 2 * y / (h - 1) - 1], dim=-1)  # align_corners
    grid = grid.reshape(n * g, 9 * h, w, 2).to(x.dtype)
    sampled = F.grid_sample(
        x.reshape(n * g, c // g, h, w),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )  # (n*g, c/g, 9*h, w)
    sampled = sampled.view(n, g, c // g, 9, h, w) * mask.view(n, g, 1, 9, h, w).to(x.dtype)
    cols = sampled.reshape(n, c * 9, h * w)  # channel-major, tap-minor = weight's (c_in, 3, 3)
    out = torch.matmul(weight.reshape(weight.shape[0], -1).to(x.dtype), cols)
    return out.view(n, -1, h, w) + bias.view(1, -1, 1, 1).to(x.dtype)


def inputs(h: int, w: int, seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 256, h, w, generator=gen)
    offset = 3 * torch.randn(1, 16 * 18, h, w, generator=gen)  # flows of a few pixels
    mask = torch.rand(1, 16 * 9, h, w, generator=gen)
    weight = torch.randn(128, 256, 3, 3, generator=gen) / 48
    bias = torch.randn(128, generator=gen)
    return [t.requires_grad_() for t in (x, offset, weight, bias, mask)]


def torchvision_dcn(x, offset, weight, bias, mask):
    return deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)


def timed(fn, args: list[Tensor], autocast: bool) -> float:
    for t in args:
        t.grad = None
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = fn(*args)
    out.float().square().mean().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="60x108", help="HxW of the feature map")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    print(
        f"machine: {machine()}; load average at start: {load_avg()[0]:.2f}; "
        f"torch threads {torch.get_num_threads()}"
    )
    a, b = inputs(h, w), inputs(h, w)
    ref, alt = torchvision_dcn(*a), deform_conv_by_sampling(*b)
    ref.square().mean().backward()
    alt.square().mean().backward()
    diff, scale = float((ref - alt).detach().abs().max()), float(ref.detach().abs().max())
    print(f"forward max|diff| {diff:.2e} (max|out| {scale:.1f})")
    # Bilinear sampling has a kink at integer coordinates; a sample landing exactly on one gets
    # a different one-sided offset gradient from each implementation, hence the count too.
    for name, ta, tb in zip(("x", "offset", "weight", "bias", "mask"), a, b, strict=True):
        diff, scale = (ta.grad - tb.grad).abs(), ta.grad.abs().max()
        off = int((diff > 1e-3 * scale).sum())
        print(
            f"grad {name}: max|diff| / max|grad| = {float(diff.max() / scale):.2e}; "
            f"elements off by > 1e-3 max|grad|: {off} of {diff.numel()}"
        )
    variants = {
        "torchvision deform_conv2d, fp32": (torchvision_dcn, False),
        "grid_sample + matmul, fp32": (deform_conv_by_sampling, False),
        "grid_sample + matmul, bf16 autocast": (deform_conv_by_sampling, True),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn, autocast in variants.values():
        timed(fn, a, autocast)  # warm-up
    for _ in range(args.repeats):
        for name, (fn, autocast) in variants.items():
            times[name].append(timed(fn, a, autocast))
    base = statistics.median(times["torchvision deform_conv2d, fp32"])
    rows = []
    for name, values in times.items():
        t = statistics.median(values)
        rows.append([name, f"{t * 1e3:.0f}", f"{base / t:.2f}x"])
    print(
        f"load average at end: {load_avg()[0]:.2f}; 1x256x{h}x{w} -> 128, 16 groups, "
        f"forward + backward, median of {args.repeats} interleaved rounds\n"
    )
    print_table(["formulation", "fwd+bwd ms", "speed-up"], rows)


if __name__ == "__main__":
    main()
