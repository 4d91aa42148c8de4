"""Each speed switch runs a few deterministic training steps and keeps the losses near fp32 eager.

The real E2FGVI-HQ ``train_step`` (generator, discriminator, flow teacher, both Adams) on a fixed
random clip at 60x108 with 2 local + 1 reference frames, ``STEPS`` iterations from the same
seeded weights. Every loss term of every step (hole, valid, flow, discriminator, generator
total) must stay within the switch's stated relative tolerance of fp32 eager's; the tolerance of
the exact reformulations (channels_last, the sampled deformable conv, foreach / fused Adam) is
float rounding, that of bf16 autocast its 8-bit mantissa. CUDA-only switches (fp16, TF32,
cudnn.benchmark) are ``gpu`` tests, skipped without a CUDA device.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from e2fgvi.config import Params
from e2fgvi.errors import UserError
from e2fgvi.train import nets as netlib
from e2fgvi.train import precision
from e2fgvi.train.distributed import World
from e2fgvi.train.steps import Clips, train_step

STEPS = 3
TERMS = ("loss/hole", "loss/valid", "loss/flow", "loss/discriminator", "loss/generator")
# Relative tolerance per switch, on every term of every step. Measured on the 2-core AVX-512 CPU:
# channels_last 6.8e-5, sampled deformable conv 0 (bit-identical here), foreach / fused Adam 0,
# bf16 1.3e-2, sampled + bf16 1.1e-2.
EXACT = 5e-4  # float rounding of a different summation order, compounded over 3 Adam steps
BF16 = 5e-2  # 8-bit mantissa in the convolutions and matmuls
FP16 = 5e-2  # 11-bit mantissa, loss-scaled
TF32 = 2e-2  # 11-bit mantissa in the CUDA matmuls and convolutions
CUDA_EXACT = 2e-3  # CUDA atomics (deform_conv2d's backward) make even fp32 runs differ slightly


def _params(params: Params, **switches: Any) -> Params:
    train = params.train.model_copy(
        update={"num_local_frames": 2, "num_ref_frames": 1, "batch_size": 1, **switches}
    )
    return params.model_copy(update={"train": train})


def _clip(device: torch.device) -> Clips:
    gen = torch.Generator().manual_seed(7)
    frames = torch.rand(1, 3, 3, 60, 108, generator=gen) * 2 - 1
    masks = (torch.rand(1, 3, 1, 60, 108, generator=gen) > 0.6).float()
    return Clips(frames.to(device), masks.to(device), 2)


def _adam(nets: netlib.Nets, **options: Any) -> None:
    """Rebuild both Adams with the same groups plus ``options`` (a benchmark-only switch)."""
    for name in ("gen_optimizer", "dis_optimizer"):
        old = getattr(nets, name)
        groups = [{k: v for k, v in g.items() if k != "initial_lr"} for g in old.param_groups]
        new = torch.optim.Adam(groups, **options)
        for group, old_group in zip(new.param_groups, old.param_groups, strict=True):
            group["initial_lr"] = old_group.get("initial_lr", old_group["lr"])
        setattr(nets, name, new)
        schedule = nets.gen_schedule if name == "gen_optimizer" else nets.dis_schedule
        schedule.optimizer = new


def run_steps(
    params: Params, device: str = "cpu", adam: dict[str, Any] | None = None, **switches: Any
) -> list[dict[str, float]]:
    """``STEPS`` deterministic training iterations; the loss terms of each."""
    cfg = _params(params, **switches)
    world = World(0, 0, 1, torch.device(device))
    precision.apply_backend_switches(cfg.train, world.device)
    nets = netlib.build_nets(cfg, None, world)
    aligns = [m for m in nets.generator.modules() if hasattr(m, "formulation")]
    assert len(aligns) == 2 and {m.formulation for m in aligns} == {cfg.train.deform_conv}
    if adam:
        _adam(nets, **adam)
    clips = _clip(world.device)
    torch.manual_seed(0)
    losses = []
    for _ in range(STEPS):
        result = train_step(nets, clips, cfg, world)
        assert result.skipped == 0
        losses.append({k: float(result.values[k]) for k in TERMS})
    return losses


def deviation(losses: list[dict[str, float]], reference: list[dict[str, float]]) -> float:
    pairs = zip(losses, reference, strict=True)
    return max(abs(a[k] - b[k]) / abs(b[k]) for a, b in pairs for k in TERMS)


@pytest.fixture(scope="module")
def fp32(params) -> list[dict[str, float]]:
    return run_steps(params)


CPU_SWITCHES = {
    "bf16 autocast": ({"amp": "bf16"}, None, BF16),
    "channels_last": ({"channels_last": True}, None, EXACT),
    "sampled deformable conv": ({"deform_conv": "sampled"}, None, EXACT),
    "sampled + bf16": ({"deform_conv": "sampled", "amp": "bf16"}, None, BF16),
    "foreach Adam": ({}, {"foreach": True}, EXACT),
    "fused Adam": ({}, {"fused": True}, EXACT),
}


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize("name", list(CPU_SWITCHES))
def test_cpu_switch_keeps_the_losses_within_its_tolerance(name, params, fp32):
    switches, adam, tolerance = CPU_SWITCHES[name]
    losses = run_steps(params, adam=adam, **switches)
    dev = deviation(losses, fp32)
    print(f"{name}: max relative loss deviation {dev:.2e}")
    assert dev <= tolerance, (name, dev)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("E2FGVI_TEST_COMPILE"),
    reason="torch.compile (inductor) of G and D had not finished after 20 min on this 2-core CPU "
    "(benchmarks/speed_switches.py); opt in with E2FGVI_TEST_COMPILE=1",
)
def test_torch_compile_keeps_the_losses(params, fp32):
    """torch.compile on generator and discriminator (inductor, CPU): the same losses."""
    losses = run_steps(params, compile=True)
    assert deviation(losses, fp32) <= EXACT


@pytest.fixture(scope="module")
def fp32_cuda(params) -> list[dict[str, float]]:
    return run_steps(params, device="cuda", tf32=False)


CUDA_SWITCHES = {
    "fp16 autocast": ({"amp": "fp16"}, FP16),
    "bf16 autocast": ({"amp": "bf16"}, BF16),
    "TF32": ({"tf32": True}, TF32),
    "cudnn.benchmark off": ({"cudnn_benchmark": False}, CUDA_EXACT),
    "channels_last": ({"channels_last": True}, CUDA_EXACT),
    "sampled deformable conv": ({"deform_conv": "sampled"}, CUDA_EXACT),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CUDA_SWITCHES))
def test_cuda_switch_keeps_the_losses_within_its_tolerance(name, params, fp32_cuda):
    switches, tolerance = CUDA_SWITCHES[name]
    losses = run_steps(params, device="cuda", **{"tf32": False, **switches})
    assert deviation(losses, fp32_cuda) <= tolerance, name


def test_fp16_is_refused_on_the_cpu(params):
    with pytest.raises(UserError, match="fp16"):
        run_steps(params, amp="fp16")
