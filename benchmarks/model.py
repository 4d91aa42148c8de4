"""Print E2FGVI model figures: parameter counts, FLOPs/MACs per clip and wall time per clip.

    PYTHONPATH=src .venv/bin/python benchmarks/model.py                 # 240x432, T=8, l_t=5
    PYTHONPATH=src .venv/bin/python benchmarks/model.py --size 60x108 --repeats 5

FLOPs come from torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-accumulate).
torchvision's deform_conv2d is not counted there, so its MACs are added from the call shapes
(c_out * c_in * 3 * 3 per output pixel), as official-e2fgvi.md §5.2 does. The paper's "682G" matches
MACs of one 8-frame clip at 432x240.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from e2fgvi.model import Discriminator, InpaintGenerator
from e2fgvi.model.feature_propagation import SecondOrderDeformableAlignment

OFFICIAL_PARAMS = {"e2fgvi": 41_799_743, "e2fgvi_hq": 41_117_887, "discriminator": 4_461_728}
PAPER_MACS = 682e9
PARTS = ("encoder", "feat_prop_module", "ss", "transformer", "sc", "decoder", "update_spynet")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="e2fgvi", choices=["e2fgvi", "e2fgvi_hq"])
    parser.add_argument("--size", default="240x432", help="HxW of the frames")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (T)")
    parser.add_argument("--local", type=int, default=5, help="local frames (l_t)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median printed)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args()


def print_parameter_counts() -> None:
    for name, model in [
        ("e2fgvi", InpaintGenerator("e2fgvi")),
        ("e2fgvi_hq", InpaintGenerator("e2fgvi_hq")),
        ("discriminator", Discriminator()),
    ]:
        count = sum(p.numel() for p in model.parameters())
        status = "==" if count == OFFICIAL_PARAMS[name] else "!="
        print(f"params {name:14s} {count:>12,} {status} official {OFFICIAL_PARAMS[name]:,}")


def count_dcn_macs(model: InpaintGenerator, frames: torch.Tensor, local: int) -> float:
    """MACs of the deformable convs, from the shapes of each call (on the meta device)."""
    macs = []

    def hook(module, args, out):
        n, c_out, h, w = out.shape
        macs.append(n * c_out * h * w * module.weight[0].numel())

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, SecondOrderDeformableAlignment)
    ]
    with torch.no_grad():
        model(frames, local)
    for handle in handles:
        handle.remove()
    return float(sum(macs))


def _part_flops(counts: dict[str, dict], part: str) -> float:
    """FLOPs of one top-level submodule (a ModuleList is summed over its children)."""
    prefix = f"InpaintGenerator.{part}"
    if prefix in counts:
        return float(sum(counts[prefix].values()))
    depth = prefix.count(".") + 1
    return float(
        sum(
            sum(ops.values())
            for name, ops in counts.items()
            if name.startswith(prefix + ".") and name.count(".") == depth
        )
    )


def print_flops(variant: str, shape: tuple[int, ...], local: int) -> None:
    with torch.device("meta"):
        model = InpaintGenerator(variant).eval()
        frames = torch.zeros(shape)
    counter = FlopCounterMode(display=False, depth=3)
    with counter, torch.no_grad():
        model(frames, local)
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    dcn = count_dcn_macs(model, frames, local)
    print(f"FLOPs per clip {tuple(shape)}, l_t={local}: {total / 1e9:,.1f} G (excluding DCN)")
    for part in PARTS:
        print(f"  {part:17s} {_part_flops(counts, part) / 1e9:9,.1f} GFLOPs")
    macs = total / 2 + dcn
    print(f"  deform convs      {dcn / 1e9:9,.1f} GMACs (counted from shapes)")
    print(f"MACs per clip: {macs / 1e9:,.1f} G  vs paper 682 G  (ratio {macs / PAPER_MACS:.3f})")


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_times(variant: str, shape: tuple[int, ...], local: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = InpaintGenerator(variant)
    frames = torch.rand(shape) * 2 - 1

    def forward():
        with torch.no_grad():
            model(frames, local)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        out, flows = model(frames, local)
        (out.mean() + flows[0].mean() + flows[1].mean()).backward()

    device = f"CPU, {torch.get_num_threads()} threads"
    fwd = _median_time(forward, repeats)
    print(f"forward          {fwd:8.2f} s/clip  ({fwd / shape[1]:.3f} s/frame; {device})")
    both = _median_time(forward_backward, repeats)
    print(f"forward+backward {both:8.2f} s/clip  (median of {repeats}; {device})")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    shape = (1, args.frames, 3, h, w)
    print_parameter_counts()
    print_flops(args.variant, shape, args.local)
    print_times(args.variant, shape, args.local, args.repeats)


if __name__ == "__main__":
    main()
