"""The side-by-side benchmark harness: mmcv stand-in, phase clock, interleaving, checks, data.

Fast unit tests; the official checkout itself is exercised only when E2FGVI_OFFICIAL points to
one (then the slow end-to-end check runs both sides on a tiny clip).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import deform_conv2d

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def _bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.fixture
def shim(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH / "mmcv_shim"))
    for name in [m for m in sys.modules if m == "mmcv" or m.startswith("mmcv.")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module


def test_shim_deform_conv_is_torchvision_with_mmcv_names(shim):
    ops = shim("mmcv.ops")
    torch.manual_seed(0)
    layer = ops.ModulatedDeformConv2d(8, 4, 3, padding=1, deform_groups=2)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.shape == (4, 8, 3, 3)
    x = torch.randn(1, 8, 5, 7)
    offset, mask = torch.randn(1, 2 * 2 * 9, 5, 7), torch.rand(1, 2 * 9, 5, 7)
    expected = deform_conv2d(x, offset, layer.weight, layer.bias, padding=(1, 1), mask=mask)
    assert torch.equal(layer(x, offset, mask), expected)
    with pytest.raises(ValueError, match="offset"):
        layer(x, offset[:, :18], mask)


def test_shim_conv_module_and_inits(shim):
    cnn = shim("mmcv.cnn")
    relu = cnn.ConvModule(3, 4, 3, padding=1, norm_cfg=None, act_cfg={"type": "ReLU"})
    plain = cnn.ConvModule(3, 4, 3, padding=1, norm_cfg=None, act_cfg=None)
    assert sorted(relu.state_dict()) == ["conv.bias", "conv.weight"]
    assert isinstance(relu.activate, nn.ReLU) and isinstance(plain.activate, nn.Identity)
    cnn.constant_init(plain.conv, val=0, bias=0)
    assert not plain.conv.weight.any() and not plain.conv.bias.any()
    assert shim("mmcv.runner").load_checkpoint(plain, "https://example.invalid/x.pth") == {}


def _tiny_trainer():
    generator, discriminator = nn.Linear(4, 4), nn.Linear(4, 1)
    gen_opt = torch.optim.Adam(generator.parameters())
    dis_opt = torch.optim.Adam(discriminator.parameters())

    def step():
        x = torch.randn(2, 4)
        fake = generator(x)
        dis_loss = discriminator(fake.detach()).mean()
        dis_opt.zero_grad()
        dis_loss.backward()
        dis_opt.step()
        gen_opt.zero_grad()
        discriminator(fake).mean().backward()
        gen_opt.step()

    return generator, discriminator, gen_opt, dis_opt, step


def test_phase_clock_splits_an_iteration_into_its_phases():
    from phase_clock import PHASES, PhaseClock

    generator, discriminator, gen_opt, dis_opt, step = _tiny_trainer()
    clock = PhaseClock("cpu")
    clock.attach(generator, discriminator, gen_opt, dis_opt)
    times = clock.run(step)
    assert set(times) == {*PHASES, "total"}
    assert all(times[p] >= 0 for p in PHASES)
    assert sum(times[p] for p in PHASES) == pytest.approx(times["total"])
    with pytest.raises(RuntimeError, match="never reached"):
        clock.run(lambda: generator(torch.randn(1, 4)))


def test_interleaving_alternates_the_sides(monkeypatch):
    import interleave

    calls = []
    monkeypatch.setattr(interleave, "run_worker", lambda spec: calls.append(spec["side"]) or {})
    specs = {"ours": {"side": "ours", "task": "t"}, "official": {"side": "official", "task": "t"}}
    results = interleave.interleaved(specs, 3)
    assert calls == ["ours", "official"] * 3
    assert [len(v) for v in results.values()] == [3, 3]


def test_same_function_accepts_equal_and_rejects_different_outputs():
    from vs_official import same_function

    out = {"pred": torch.linspace(-1, 1, 10)}
    losses = {"loss/hole": 0.5}
    report = same_function(out, {"pred": out["pred"] + 1e-7}, losses, {"loss/hole": 0.5})
    assert report["max|diff| pred"] < 1e-6
    with pytest.raises(SystemExit, match="pred"):
        same_function(out, {"pred": out["pred"] + 1e-2}, losses, losses)
    with pytest.raises(SystemExit, match="loss/hole"):
        same_function(out, out, losses, {"loss/hole": 0.51})


def test_official_loader_refuses_a_folder_that_is_no_checkout(tmp_path):
    import official_api

    with pytest.raises(SystemExit, match="not an E2FGVI checkout"):
        official_api.load(tmp_path)


def test_clip_data_feeds_our_dataset(tmp_path):
    import ours_api
    from clip_data import write_videos

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (72, 128, 3), dtype=np.uint8) for _ in range(12)]
    root = write_videos(frames, tmp_path / "src", 2, (108, 60), 90)
    setup = ours_api.Setup(variant="e2fgvi_hq", width=108, height=60)
    dataset = ours_api.train_dataset(root / "JPEGImages", root / "train.json", setup)
    frames_t, masks_t = dataset[0]
    assert frames_t.shape == (8, 3, 60, 108) and masks_t.shape == (8, 1, 60, 108)
    assert ours_api.mask_video(rng, 5, setup).shape == (5, 60, 108)


def test_loader_option_difference():
    from loader_options import difference

    a = np.zeros((4, 4, 3), np.uint8)
    assert difference(a, a)[0] == float("inf")
    b = a.copy()
    b[0, 0, 0] = 10
    psnr, mean_abs, max_abs = difference(a, b)
    assert max_abs == 10 and mean_abs == pytest.approx(10 / 48)
    assert psnr == pytest.approx(10 * np.log10(255**2 / (100 / 48)))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("E2FGVI_OFFICIAL"), reason="set E2FGVI_OFFICIAL=checkout")
def test_official_and_ours_compute_the_same_function(tmp_path):
    import argparse

    from vs_official import check_same_function

    args = argparse.Namespace(official=Path(os.environ["E2FGVI_OFFICIAL"]), device="cpu",
                              warmup=0, iters=1, threads=0)  # fmt: skip
    report = check_same_function(args, "hq", tmp_path)
    assert report["max|diff| pred"] < 1e-4


def test_paired_runs_put_every_switch_between_two_fp32_runs(monkeypatch):
    import speed_switches

    order = []

    def fake(spec):
        order.append(spec["name"])
        if spec["name"] == "broken":
            raise RuntimeError("worker failed\nRuntimeError: no kernel")
        return {"phases": [{"total": 1.0}]}

    monkeypatch.setattr(speed_switches, "run_worker", fake)
    specs = {name: {"name": name} for name in ("fp32", "bf16", "broken")}
    runs, pairs = speed_switches.paired_runs(specs, 2, lambda _: None)
    assert order == ["fp32", *["bf16", "fp32", "broken", "fp32"] * 2]
    assert pairs["bf16"] == [(0, 0, 1), (2, 1, 3)]
    assert pairs["broken"] == [(1, 0, 2), (3, 1, 4)]
    assert runs["broken"][0] == {"error": "RuntimeError: no kernel"}
    assert speed_switches.switch_settings("bf16+fused", "cpu") == {"amp": "bf16", "adam": "fused"}
    with pytest.raises(SystemExit, match="CUDA only"):
        speed_switches.switch_settings("tf32", "cpu")
