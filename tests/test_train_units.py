"""Training building blocks that need no model: checkpoints, sampler, schedule, DDP helpers."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from e2fgvi.config import Params, TrainParams
from e2fgvi.data.dataset import StepSampler
from e2fgvi.errors import UserError
from e2fgvi.train import checkpoint, optim, provenance, telemetry
from e2fgvi.train.distributed import World, init_world, per_rank_batch, torchrun_command
from e2fgvi.train.session import Terminated, signals_deferred, sigterm_interrupts
from e2fgvi.train.telemetry import Averager, History


def test_checkpoints_rotate_and_resume_latest(tmp_path):
    for step in (2, 4, 6, 8):
        checkpoint.save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, keep=2)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [6, 8]
    latest = checkpoint.latest_checkpoint(tmp_path)
    state = checkpoint.load_checkpoint(latest)
    assert state["step"] == 8 and torch.equal(state["w"], torch.full((2,), 8.0))
    assert not list(tmp_path.glob("*.tmp")), "no temporary files left behind"


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path, 1, {"w": torch.ones(1)}, keep=3)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(tmp_path, 2, {"w": torch.ones(1)}, keep=3)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [1]
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_checkpoint_write_stops_after_it_is_complete(tmp_path, signum):
    """Ctrl-C inside torch.save once tore the zip and ended the run FAILED, not KILLED."""
    real_save = torch.save
    big = {"w": torch.randn(2_000_000)}

    def interrupted_save(obj, handle, **kwargs):
        os.kill(os.getpid(), signum)  # arrives mid-write, as the user's Ctrl-C did
        real_save(obj, handle, **kwargs)

    # A shell starts background jobs with SIGINT ignored; a terminal's Ctrl-C is the case here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_a_checkpoint_write(tmp_path, signum, interrupted_save, big)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_a_checkpoint_write(tmp_path, signum, interrupted_save, big) -> None:
    with sigterm_interrupts(), pytest.raises(KeyboardInterrupt) as stopped:
        with signals_deferred(), pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch, "save", interrupted_save)
            checkpoint.save_checkpoint(tmp_path, 3, big, keep=2)
        pytest.fail("the deferred signal was dropped")
    assert isinstance(stopped.value, Terminated) == (signum == signal.SIGTERM)
    state = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(tmp_path))
    assert state["step"] == 3 and torch.equal(state["w"], big["w"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_foreign_and_corrupt_checkpoints_are_one_line_errors(tmp_path):
    foreign = tmp_path / "ckpt_0000001.pth"
    torch.save({"w": torch.ones(1)}, foreign)
    with pytest.raises(UserError, match="not an e2fgvi-repro training checkpoint"):
        checkpoint.load_checkpoint(foreign)
    foreign.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="not a loadable checkpoint; delete it to resume") as info:
        checkpoint.load_checkpoint(foreign)
    assert str(info.value).startswith(f"{foreign}: ") and "\n" not in str(info.value)


def test_rng_state_round_trip():
    rng = np.random.default_rng(3)
    state = checkpoint.rng_state(rng)
    expected = (torch.rand(3), rng.random(3))
    checkpoint.restore_rng_state(state, rng)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(rng.random(3), expected[1])


def test_all_finite_detects_nan():
    layer = torch.nn.Linear(2, 2)
    assert checkpoint.all_finite(layer)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    assert not checkpoint.all_finite(layer)


def test_step_sampler_splits_global_batch_and_resumes():
    ranks = [list(StepSampler(0, 3, 4, rank, 2)) for rank in (0, 1)]
    assert ranks == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    assert list(StepSampler(2, 3, 4, 1, 2)) == [10, 11]
    assert len(StepSampler(1, 3, 4, 0, 2)) == 4


def test_per_rank_batch_must_divide():
    cpu = torch.device("cpu")
    assert per_rank_batch(8, World(0, 0, 4, cpu)) == 2
    with pytest.raises(UserError, match=r"train\.batch_size 6 does not split over 4"):
        per_rank_batch(6, World(0, 0, 4, cpu))


def test_torchrun_command_single_and_multi_node(monkeypatch):
    single = torchrun_command(4, 1, "e2fgvi.stages.train", ["--out", "x"])
    assert "--nproc-per-node=4" in single and "--standalone" in single
    assert single[-4:] == ["-m", "e2fgvi.stages.train", "--out", "x"]
    monkeypatch.delenv("PET_RDZV_ENDPOINT", raising=False)
    monkeypatch.delenv("PET_RDZV_BACKEND", raising=False)
    with pytest.raises(UserError, match="PET_RDZV_ENDPOINT"):
        torchrun_command(8, 2, "m", [])
    monkeypatch.setenv("PET_RDZV_ENDPOINT", "node0:29400")
    multi = torchrun_command(8, 2, "m", [])
    assert "--rdzv-backend=c10d" in multi and "--nnodes=2" in multi and "--standalone" not in multi


def test_schedule_steps_per_iteration_and_spynet_group():
    cfg = TrainParams(milestones=[3], lr=1e-4, gamma=0.1, spynet_lr=0.5)
    model = torch.nn.Module()
    model.body = torch.nn.Linear(2, 2)
    model.update_spynet = torch.nn.Linear(2, 2)
    opt = optim.generator_optimizer(model, cfg)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 5e-5]
    assert opt.defaults["betas"] == (0.0, 0.99)
    sched = optim.schedule(opt, cfg)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-4, 1e-4, 1e-4, 1e-5, 1e-5])


def test_resume_key_ignores_run_length_only():
    base = Params()
    longer = base.model_copy(update={"train": base.train.model_copy(update={"iterations": 7})})
    other_lr = base.model_copy(update={"train": base.train.model_copy(update={"lr": 2e-4})})
    assert provenance.resume_key(base) == provenance.resume_key(longer)
    assert provenance.resume_key(base) != provenance.resume_key(other_lr)


def test_averager_and_history(tmp_path):
    avg = Averager()
    avg.add({"a": torch.tensor(1.0)})
    avg.add({"a": torch.tensor(3.0)})
    assert avg.pop() == {"a": 2.0}
    path = tmp_path / "history.csv"
    history = History(path, 0)
    for step in (1, 2, 3):
        history.append(step, {"loss": float(step)})
    resumed = History(path, 2)
    assert [int(r["step"]) for r in resumed.rows] == [1, 2]
    assert resumed.last() == {"step": 2.0, "loss": 2.0}


def test_history_appends_a_line_per_log_and_drops_a_torn_tail(tmp_path, monkeypatch):
    """5,000 logs of a 500k run: each must cost the same, not rewrite the whole file."""
    path = tmp_path / "history.csv"
    rewrites = []
    real = telemetry.write_text
    monkeypatch.setattr(telemetry, "write_text", lambda *a: rewrites.append(a) or real(*a))
    history = History(path, 0)
    for step in range(100, 5100, 100):
        history.append(step, {"loss": step / 7, "lr": 1e-4})
    assert len(rewrites) == 1  # the header, once
    assert len(history.rows) == 50 and history.last()["step"] == 5000
    with path.open("a") as handle:  # a kill in the middle of a line
        handle.write("5100,71")
    resumed = History(path, 5100)
    assert [int(r["step"]) for r in resumed.rows][-1] == 5000
    resumed.append(5100, {"loss": 1.0, "lr": 1e-4})
    assert path.read_text().splitlines()[-1] == "5100,1.0,0.0001"


def test_each_rank_gets_its_own_gpu_or_a_one_line_error(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: None)
    assert init_world("auto").device == torch.device("cuda", 1) and chosen == [1]
    monkeypatch.setenv("LOCAL_RANK", "2")  # would share a GPU with another rank: NCCL refuses
    with pytest.raises(
        UserError,
        match=r"^train\.device: process needs GPU 2 but 2 are visible; "
        r"run at most 2 processes per node \(train\.nproc_per_node\)",
    ) as info:
        init_world("cuda")  # fmt: skip
    assert "\n" not in str(info.value) and chosen == [1]
    assert init_world("cpu").device == torch.device("cpu")


def test_checkpoint_artifact_is_logged_without_hard_links(tmp_path, monkeypatch):
    from e2fgvi import tracking
    from e2fgvi.train.telemetry import log_checkpoint

    def no_links(*args, **kwargs):
        raise OSError("hard links not supported here")

    monkeypatch.setattr("os.link", no_links)  # e.g. a FUSE or SMB mount for the run folder
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ckpt = tmp_path / "run" / "ckpt_0000002.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    uri = tracking.tracking_uri(tmp_path / "mlruns")
    logger = tracking.RunLogger(uri, "ckpt-test", artifact_root=tmp_path / "mlruns")
    log_checkpoint(logger, ckpt, enabled=True)
    assert logger.close()
    assert tracking.list_artifacts(uri, logger.run_id, "checkpoints") == ["checkpoints/latest.pth"]
    assert ckpt.read_bytes() == b"weights"


def test_final_figures_of_a_diverged_run_are_strict_json(tmp_path, params, monkeypatch):
    from types import SimpleNamespace

    from e2fgvi import tracking
    from e2fgvi.atomic import write_json
    from e2fgvi.measure.meter import CostMeter
    from e2fgvi.train import session
    from e2fgvi.train.session import TrainPaths

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    paths = TrainPaths.under(tmp_path, run_dir, tmp_path / "mlruns")
    folder = paths.folder(params)
    History(folder / "history.csv", 0).append(
        40, {"loss/generator": float("nan"), "loss/hole": 0.5}
    )
    uri = tracking.tracking_uri(tmp_path / "mlruns")
    run = tracking.RunLogger(uri, "nan-test", artifact_root=tmp_path / "mlruns")
    state = session.Session(
        folder, 0, {"skipped_updates": 3}, run, History(folder / "history.csv", 40)
    )
    meter = CostMeter(params.cost, torch.device("cpu"), 1)
    meter.start()
    nets = SimpleNamespace(generator=torch.nn.Linear(1, 1))
    ctx = session.TrainContext(params, None, nets, meter, state)
    figures = session.finish(ctx, paths, meter.gather(meter.stop()))
    assert figures["loss_generator"] is None and figures["loss_hole"] == 0.5
    assert figures["loss_mean"] == {"from_step": 31, "generator": None, "hole": 0.5}
    assert figures["skipped_updates"] == 3
    write_json(tmp_path / "train_metrics.json", figures)  # raised ValueError on NaN


def test_a_user_error_raised_in_a_dataloader_worker_stays_one_line(tmp_path):
    from torch.utils.data import DataLoader, Dataset

    from e2fgvi.errors import one_line

    class Broken(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise UserError("clip.zip: member 00003.jpg is corrupt; re-run prepare")

    with pytest.raises(UserError) as caught:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert "\n" in str(caught.value)  # torch attaches the worker's traceback
    assert one_line(caught.value) == "clip.zip: member 00003.jpg is corrupt; re-run prepare"


CPU_WORLD = World(0, 0, 1, torch.device("cpu"))


def _variant(params: Params, variant: str) -> Params:
    """``params`` with ``model.variant`` and a random SPyNet init (no weight file needed)."""
    model = params.model.model_copy(update={"variant": variant, "spynet_init": "random"})
    return params.model_copy(update={"model": model})


def test_resuming_the_other_variants_or_a_foreign_checkpoint_is_one_line(tmp_path, params):
    """A checkpoint the configuration's networks cannot take: one line naming file and fix.

    The folder is per configuration, so a user gets here by copying a checkpoint in, by
    placing a released generator there, or with train.resume_any_code after model code
    changed a layer.
    """
    from e2fgvi.train import nets as netlib

    nets = netlib.build_nets(_variant(params, "e2fgvi_hq"), None, CPU_WORLD)
    plain = netlib.build_nets(_variant(params, "e2fgvi"), None, CPU_WORLD)

    def refused(state: dict, name: str) -> str:
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "ckpt_0000002.pth"
        torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "step": 2, **state}, path)
        with pytest.raises(UserError) as info:
            netlib.resume(nets, folder)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        assert f"move it out of {folder}" in message, message
        return message

    own = {**netlib.state_dict(nets), "rng": checkpoint.rng_state(), "meta": {}}
    other = refused({**netlib.state_dict(plain), "rng": own["rng"], "meta": {}}, "variant")
    assert "model.variant e2fgvi" in other and "trains e2fgvi_hq" in other, other
    key = "encoder.layers.0.weight"
    layer = {**own["generator"], key: own["generator"][key][:, :1]}
    assert f"wrong shapes for {key}" in refused({**own, "generator": layer}, "layer")
    groups = {**own["gen_optimizer"], "param_groups": own["gen_optimizer"]["param_groups"][:1]}
    assert "cannot be resumed" in refused({**own, "gen_optimizer": groups}, "optimizer")
    released = tmp_path / "released"
    released.mkdir()
    torch.save(netlib.unwrap(nets.generator).state_dict(), released / "ckpt_0000010.pth")
    with pytest.raises(UserError, match="not an e2fgvi-repro training checkpoint") as info:
        netlib.resume(nets, released)
    assert f"move it out of {released}" in str(info.value) and "\n" not in str(info.value)
