"""One real E2FGVI-HQ training iteration on the sample, in-process; the non-finite guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from e2fgvi.config import Params
from e2fgvi.errors import UserError
from e2fgvi.train import nets as netlib
from e2fgvi.train import optim, provenance, session
from e2fgvi.train.distributed import World
from e2fgvi.train.loop import TrainPaths, make_loader
from e2fgvi.train.steps import Clips, train_step

CPU = World(0, 0, 1, torch.device("cpu"))


def run_paths(data: Path, run: Path) -> TrainPaths:
    """The train stage's paths as dvc.yaml lays them out, under ``run``."""
    return TrainPaths.under(data, run, run / "mlruns")


@pytest.fixture
def tiny(params: Params) -> Params:
    """The sample profile with 2 local + 1 reference frames (the real network, fewer frames)."""
    train = params.train.model_copy(update={"num_local_frames": 2, "num_ref_frames": 1})
    return params.model_copy(update={"train": train})


def _batch(tiny: Params, sample_dataset, tmp_path) -> Clips:
    paths = run_paths(sample_dataset, tmp_path)
    frames, masks = next(iter(make_loader(tiny, paths, CPU, 0)))
    return Clips(frames, masks, tiny.train.num_local_frames)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_one_generator_and_discriminator_step_on_the_sample(tiny, sample_dataset, tmp_path):
    clips = _batch(tiny, sample_dataset, tmp_path)
    assert clips.frames.shape == (1, 3, 3, 60, 108)
    assert clips.frames.min() >= -1 and clips.frames.max() <= 1
    assert set(clips.masks.unique().tolist()) <= {0.0, 1.0} and clips.masks.sum() > 0
    nets = netlib.build_nets(tiny, None, CPU)
    g0, d0 = _snapshot(nets.generator), _snapshot(nets.discriminator)
    result = train_step(nets, clips, tiny, CPU)
    assert result.skipped == 0
    for key in ("loss/hole", "loss/valid", "loss/flow", "loss/adversarial", "loss/discriminator"):
        assert torch.isfinite(result.values[key]), key
    changed_g = [k for k, v in nets.generator.state_dict().items() if not torch.equal(v, g0[k])]
    changed_d = [k for k, v in nets.discriminator.state_dict().items() if not torch.equal(v, d0[k])]
    # The zero-initialised last offset conv (official-e2fgvi.md §3.8) blocks the gradient to the
    # offset layers before it at the first step; every other generator parameter must move.
    blocked = {f"conv_offset.{i}." for i in (0, 2, 4)}
    trainable = [
        n for n, _ in nets.generator.named_parameters() if not any(b in n for b in blocked)
    ]
    assert set(trainable) <= set(changed_g), set(trainable) - set(changed_g)
    assert any("conv_offset.6." in k for k in changed_g)
    # At the first step every D logit lies inside the hinge margin, so the final bias gets
    # d/db [mean relu(1 - real) + mean relu(1 + fake)] = -1 + 1 = 0: it alone stays put.
    assert set(d0) - set(changed_d) == {"conv.10.bias"}
    assert nets.gen_schedule.last_epoch == 1 and nets.dis_schedule.last_epoch == 1
    assert result.comp.shape == clips.frames.shape


def test_non_finite_loss_skips_the_update(tiny, sample_dataset, tmp_path):
    clips = _batch(tiny, sample_dataset, tmp_path)
    clips.frames[0, 0, 0, 0, 0] = float("nan")
    nets = netlib.build_nets(tiny, None, CPU)
    g0, d0 = _snapshot(nets.generator), _snapshot(nets.discriminator)
    result = train_step(nets, clips, tiny, CPU)
    assert result.skipped == 2
    for key, value in nets.generator.state_dict().items():
        assert torch.equal(value, g0[key]), key
    params = dict(nets.discriminator.named_parameters())
    for key, value in nets.discriminator.state_dict().items():
        if key in params:  # spectral-norm u/v buffers move in every forward, by design
            assert torch.equal(value, d0[key]), key


def test_rollback_restores_the_checkpoint_and_nan_never_reaches_one(tiny, tmp_path):
    nets = netlib.build_nets(tiny, None, CPU)
    saved = netlib.save(nets, tmp_path, 4, {"run_id": None}, keep=2)
    assert saved is not None
    reference = _snapshot(nets.generator)
    with torch.no_grad():
        next(nets.generator.parameters()).fill_(float("nan"))
    assert netlib.save(nets, tmp_path, 5, {}, keep=2) is None
    assert not (tmp_path / "ckpt_0000005.pth").exists()
    assert netlib.rollback(nets, tmp_path, 5)
    for key, value in nets.generator.state_dict().items():
        assert torch.equal(value, reference[key]), key
    step, meta = netlib.resume(netlib.build_nets(tiny, None, CPU), tmp_path)
    assert step == 4 and meta == {"run_id": None}


def test_rollback_keeps_the_lr_schedule_on_the_iteration_count(tiny, tmp_path):
    train = tiny.train.model_copy(update={"milestones": [6], "gamma": 0.1})
    nets = netlib.build_nets(tiny.model_copy(update={"train": train}), None, CPU)
    schedules = (nets.gen_schedule, nets.dis_schedule)
    for _ in range(4):
        for schedule in schedules:
            optim.step_schedule(schedule)
    assert netlib.save(nets, tmp_path, 4, {}, keep=2) is not None
    for _ in range(3):  # iterations 5, 6 (the milestone) and 7, the one that rolls back
        for schedule in schedules:
            optim.step_schedule(schedule)
    assert netlib.rollback(nets, tmp_path, 7)
    assert [s.last_epoch for s in schedules] == [7, 7]
    for optimizer in (nets.gen_optimizer, nets.dis_optimizer):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(train.lr * 0.1)


def test_resume_refuses_checkpoints_of_other_training_code(tiny, tmp_path):
    paths = run_paths(tmp_path, tmp_path / "run")
    current = {"code_fingerprint": provenance.code_fingerprint()}
    session.check_resume(tiny, paths, CPU, 4, current)  # same code: fine
    with pytest.raises(UserError, match="different model/training code"):
        session.check_resume(tiny, paths, CPU, 4, {"code_fingerprint": "0123456789abcdef"})
    session.check_resume(tiny, paths, CPU, 0, {})  # a fresh start has nothing to check
    anyway = tiny.model_copy(
        update={"train": tiny.train.model_copy(update={"resume_any_code": True})}
    )
    session.check_resume(anyway, paths, CPU, 4, {"code_fingerprint": "0123456789abcdef"})
    assert provenance.resume_key(anyway) == provenance.resume_key(tiny)


def test_interrupted_checkpoint_writes_are_cleared_on_resume(tiny, tmp_path):
    paths = run_paths(tmp_path, tmp_path / "run")
    folder = paths.folder(tiny)
    folder.mkdir(parents=True)
    (folder / ".ckpt_0000004.pth.abc.tmp").write_bytes(b"partial")
    session.check_resume(tiny, paths, CPU, 0, {})
    assert not list(folder.glob("*.tmp"))


def test_resume_refuses_an_earlier_cost_snapshot_it_cannot_read(tiny, tmp_path):
    """Checked before training, so nothing is lost: one line naming the file and the remedy."""
    paths = run_paths(tmp_path, tmp_path / "run")
    snapshot = paths.folder(tiny) / "cost" / "session_0000001.json"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_text('{"schema": 1, "kind": "gathered"}')
    current = {"code_fingerprint": provenance.code_fingerprint()}
    with pytest.raises(UserError, match=r"session_0000001\.json: cost record of schema 1") as info:
        session.check_resume(tiny, paths, CPU, 4, current)
    assert "delete that file" in str(info.value) and "\n" not in str(info.value)
    session.check_resume(tiny, paths, CPU, 0, {})  # a fresh start's own file is not earlier
