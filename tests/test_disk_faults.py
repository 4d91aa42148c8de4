"""A read-only output folder or a full disk, for real, in every data and evaluation stage.

Each stage runs as DVC runs it (``python -m e2fgvi.stages.<name>`` in a folder holding
params.yaml), in a private mount namespace where its output folder is a read-only bind mount or
a tmpfs too small for what it writes (tests/_confined.py). The stage must end with status 1 and
one line naming the path and what to do, and leave no half-written file where a finished one is
expected.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from _archives import make_release
from _clips import box_masks, carphone_frames, write_test_split
from _confined import python, run_confined

FULL = 4096  # bytes: one page; a tmpfs this small fills up on the first real file

# The evaluate stage with the generator replaced by one that predicts grey (no weights needed);
# everything else, the output writing included, is the real stage.
_EVALUATE = """
import sys, torch
from e2fgvi.entry import run_module
from e2fgvi.stages import evaluate

def grey(x, num_local):
    return torch.zeros(x.shape[0] * x.shape[1], *x.shape[2:])

evaluate.load_window_model = lambda *a: (grey, "e2fgvi_hq")
run_module(evaluate, sys.argv[1:])
"""

# `e2fgvi inpaint` with the generator replaced the same way.
_INPAINT = """
import sys, torch
from e2fgvi import cli
from e2fgvi.eval import inpaint

def grey(x, num_local):
    return torch.zeros(x.shape[0] * x.shape[1], *x.shape[2:])

inpaint.load_window_model = lambda *a: (grey, "e2fgvi_hq")
sys.exit(cli.main(["inpaint", *sys.argv[1:]]))
"""


def _params(folder: Path, repo_root: Path, edit=None) -> None:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    if edit:
        edit(raw)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))


def _download(tmp_path, repo_root, request):
    train = make_release(tmp_path / "dl" / "train.zip", "train_all_frames", {"a": 20, "b": 20})
    test = make_release(tmp_path / "dl" / "test.zip", "test_all_frames", {"c": 20})

    def edit(raw):
        raw["data"]["source"] = "local"
        raw["data"]["train"]["location"] = str(train)
        raw["data"]["test"]["location"] = str(test)

    _params(tmp_path, repo_root, edit)
    argv = ["-m", "e2fgvi.stages.download", "--out", "raw", "--partial-dir", "raw.partial"]
    return argv, tmp_path / "raw", "train_all_frames.zip"


def _pretrained(tmp_path, repo_root, request):
    weights = tmp_path / "dl" / "rgb_imagenet.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w" * 100_000)

    def edit(raw):
        raw["data"]["pretrained"]["i3d"] = {"fetch": True, "url": str(weights), "sha256": ""}

    _params(tmp_path, repo_root, edit)
    argv = ["-m", "e2fgvi.stages.pretrained", "--out", "pre", "--spynet", "pre/spynet.pth",
            "--i3d", "pre/rgb_imagenet.pt", "--partial-dir", "pre.partial"]  # fmt: skip
    return argv, tmp_path / "pre", "rgb_imagenet.pt"


def _prepare(tmp_path, repo_root, request):
    make_release(tmp_path / "raw" / "train_all_frames.zip", "train_all_frames", {"a": 20, "b": 20})
    make_release(tmp_path / "raw" / "test_all_frames.zip", "test_all_frames", {"c": 20})

    def edit(raw):
        raw["prepare"]["resize"] = []

    _params(tmp_path, repo_root, edit)
    argv = ["-m", "e2fgvi.stages.prepare", "--raw", "raw", "--out", "yv",
            "--report", "reports/data.json", "--details", "reports/data_details.json"]  # fmt: skip
    return argv, tmp_path / "yv", ""


def _masks(tmp_path, repo_root, request):
    _params(tmp_path, repo_root)
    (tmp_path / "test.json").write_text(json.dumps({"v1": 20, "v2": 20}))
    argv = ["-m", "e2fgvi.stages.masks", "--index", "test.json", "--out", "test_masks"]
    return argv, tmp_path / "test_masks", "v1.zip"


def _evaluate(tmp_path, repo_root, request):
    def edit(raw):
        raw["eval"].update(max_videos=1, strip_frames=2, vfid=False)

    _params(tmp_path, repo_root, edit)
    write_test_split(tmp_path / "yvos", {"clip": (carphone_frames(6), box_masks(6, 144, 176))})
    run_file = _tracked_run(tmp_path)
    argv = ["-c", _EVALUATE, "--data", "yvos", "--checkpoint", "run/generator.pth",
            "--pretrained", "none.pt", "--run", str(run_file), "--mlruns", "mlruns",
            "--out", "reports/eval"]  # fmt: skip
    return argv, tmp_path / "reports" / "eval", "strip.png"


def _inpaint(tmp_path, repo_root, request, out="out/result.mp4"):
    from PIL import Image

    frames, masks = carphone_frames(16), box_masks(16, 144, 176)
    (tmp_path / "frames").mkdir()
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{k:05d}.png")
    Image.fromarray(masks[0]).save(tmp_path / "mask.png")
    argv = ["-c", _INPAINT, "--video", "frames", "--masks", "mask.png", "--checkpoint", "x.pth",
            "--out", out]  # fmt: skip
    return argv, tmp_path / "out", Path(out).name


def _tracked_run(tmp_path) -> Path:
    """A train-like MLflow run and its run reference, as later stages read it."""
    from e2fgvi.tracking import RunLogger, tracking_uri

    uri = tracking_uri(tmp_path / "mlruns")
    logger = RunLogger(uri=uri, experiment="faults", artifact_root=tmp_path / "mlruns")
    logger.set_tags({"stage": "train"})  # the run exists from its first record on
    assert logger.close()
    run_file = tmp_path / "run" / "mlflow_run.json"
    run_file.parent.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"run_id": logger.run_id, "uri": uri, "spool": ""}))
    return run_file


TINY_TRAINING = {
    "train__num_local_frames": 2, "train__num_ref_frames": 1, "train__iterations": 2,
    "train__log_every": 1, "train__image_every": 1000, "train__checkpoint_every": 2,
    "cost__warmup_steps": 1, "cost__forecast": {"profile_warmup": 0, "profile_steps": 2,
    "probe_max_clips": 1, "derived_margin": 0.25},
    "tracking__experiment": "faults", "tracking__retry_interval_s": 0.0,
}  # fmt: skip


def _train(tmp_path, repo_root, request):
    from helpers import write_params

    data = request.getfixturevalue("sample_dataset")
    write_params(tmp_path, **TINY_TRAINING)
    argv = ["-m", "e2fgvi.stages.train", "--data", str(data), "--spynet", "spynet.pth",
            "--checkpoints", "run/checkpoints", "--generator", "run/generator.pth",
            "--cost-record", "run/cost_raw.json", "--run-record", "run/mlflow_run.json",
            "--params-used", "run/params_used.json", "--mlruns", "mlruns",
            "--metrics", "train.json", "--plots", "train_loss.csv"]  # fmt: skip
    return argv, tmp_path / "run", "generator.pth"


def _cost(tmp_path, repo_root, request):
    import torch

    from e2fgvi.atomic import write_json
    from e2fgvi.config import CostParams
    from e2fgvi.measure.meter import CostMeter
    from e2fgvi.measure.record import write_record

    _params(tmp_path, repo_root)
    meter = CostMeter(CostParams(warmup_steps=1), torch.device("cpu"), clips_per_step=1)
    meter.start()
    for step in range(4):
        with meter.compute():
            torch.ones(64, 64) @ torch.ones(64, 64)
        meter.end_step(step)
    write_record(tmp_path / "run" / "cost_raw.json", meter.gather(meter.stop()))
    write_json(tmp_path / "run" / "params_used.json",
               yaml.safe_load((repo_root / "params.yaml").read_text()))  # fmt: skip
    run_file = _tracked_run(tmp_path)
    argv = ["-m", "e2fgvi.stages.cost", "--record", "run/cost_raw.json", "--run", str(run_file),
            "--params-used", "run/params_used.json", "--mlruns", "mlruns",
            "--out", "reports/cost"]  # fmt: skip
    return argv, tmp_path / "reports" / "cost", "power.png"


def _profile(tmp_path, repo_root, request):
    from helpers import write_params

    write_params(tmp_path, **TINY_TRAINING)
    # The plan is the tiny params file itself: the official one takes minutes per step here.
    argv = ["-m", "e2fgvi.stages.profile", "--plan", "params.yaml", "--mlruns", "mlruns",
            "--out", "reports/profile"]  # fmt: skip
    # Several report files: which one meets the full disk depends on their sizes; none may be
    # left half-written (checked for every case).
    return argv, tmp_path / "reports" / "profile", ""


CASES = [
    pytest.param(_download, id="download"),
    pytest.param(_pretrained, id="pretrained"),
    pytest.param(_prepare, id="prepare"),
    pytest.param(_masks, id="masks"),
    pytest.param(_evaluate, id="evaluate"),
    pytest.param(_inpaint, id="inpaint-mp4"),
    pytest.param(lambda *a: _inpaint(*a, out="out/result"), id="inpaint-png-folder"),
    pytest.param(_cost, id="cost"),
    pytest.param(_train, id="train", marks=pytest.mark.slow),
    pytest.param(_profile, id="profile", marks=pytest.mark.slow),
]


def _one_line(done, folder: Path, cwd: Path, words: str) -> str:
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = done.errors
    message = re.search(r" ERROR [\w.]+: (.*)$", line).group(1)  # a progress bar may precede
    named = (str(folder), str(folder.relative_to(cwd)))
    assert message.startswith(named), message  # the path first, then what happened
    assert words in message and "then rerun" in message, message
    return message


def _half_written(names: list[str]) -> list[str]:
    """Temporary files and partial folders: what an interrupted write leaves behind. prepare's
    work folder is exempt: it holds only finished per-video zips, kept for the next run."""
    return [
        n for n in names
        if n.endswith(".tmp") or (any(part.endswith(".partial") for part in n.split("/"))
        and not n.startswith(".JPEGImages.partial"))
    ]  # fmt: skip


@pytest.mark.parametrize("setup", CASES)
def test_read_only_output_folder_is_one_line_and_changes_nothing(tmp_path, repo_root, request,
                                                                 setup):  # fmt: skip
    argv, out, _ = setup(tmp_path, repo_root, request)
    out.mkdir(parents=True, exist_ok=True)
    (out / "earlier.txt").write_text("an earlier file")
    done = run_confined(python(*argv), read_only=(out,), cwd=tmp_path)
    _one_line(done, out, tmp_path, "the file system is read-only; make it writable")
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]


@pytest.mark.parametrize("setup", CASES)
def test_full_disk_is_one_line_and_leaves_no_half_written_file(tmp_path, repo_root, request,
                                                               setup):  # fmt: skip
    argv, out, expected = setup(tmp_path, repo_root, request)
    done = run_confined(python(*argv), full={out: FULL}, cwd=tmp_path)
    _one_line(done, out, tmp_path, "no space left on the device; free some space")
    left = done.files[out]
    assert _half_written(left) == [], left
    if expected:
        assert expected not in left, left  # the file that did not fit is absent, not cut short
    if setup is _prepare:  # nothing a later stage could take for a complete data set
        assert not {"JPEGImages", "train.json", "test.json"} & set(left), left


def test_the_confinement_is_real(tmp_path):
    """The fault helpers fault: a write fails in the namespace and works outside it."""
    code = "import sys; open(sys.argv[1], 'wb').write(b'x' * 100_000)"
    target = tmp_path / "d"
    target.mkdir()
    assert run_confined([sys.executable, "-c", code, str(target / "f")], full={target: FULL}).stderr
    assert run_confined([sys.executable, "-c", code, str(target / "f")], read_only=(target,)).stderr
    assert run_confined([sys.executable, "-c", code, str(target / "f")]).returncode == 0
    assert (target / "f").stat().st_size == 100_000
