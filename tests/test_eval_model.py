"""Evaluation and inpaint with the real generator (random weights, tiny sizes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from _clips import box_masks, carphone_frames, write_test_split
from _stages import call_stage
from PIL import Image

from e2fgvi import cli
from e2fgvi.errors import UserError
from e2fgvi.eval.generator import as_window_model, load_window_model
from e2fgvi.eval.protocol import dilate_mask
from e2fgvi.model import InpaintGenerator, pad_frames_for_hq
from e2fgvi.stages import evaluate as stage
from e2fgvi.tracking import RunLogger, search_runs, tracking_uri

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoints(module_folder):
    root = module_folder("ckpt")
    torch.manual_seed(0)
    paths = {}
    for variant in ("e2fgvi", "e2fgvi_hq"):
        paths[variant] = root / f"{variant}.pth"
        torch.save(InpaintGenerator(variant).state_dict(), paths[variant])
    return paths


def test_variant_is_detected_and_the_other_variant_is_one_line(checkpoints):
    _, found = load_window_model(checkpoints["e2fgvi"], None, CPU)
    assert found == "e2fgvi"
    with pytest.raises(UserError, match="holds an e2fgvi generator, not e2fgvi_hq") as info:
        load_window_model(checkpoints["e2fgvi"], "e2fgvi_hq", CPU)
    assert "\n" not in str(info.value)


def test_e2fgvi_refuses_other_sizes_before_running():
    model = as_window_model(InpaintGenerator("e2fgvi").eval(), "e2fgvi")
    with pytest.raises(UserError, match="432x240"):
        model(torch.zeros(1, 3, 3, 60, 108), 2)


def test_hq_pads_runs_and_crops_back():
    torch.manual_seed(0)
    generator = InpaintGenerator("e2fgvi_hq").eval()
    x = torch.rand(1, 3, 3, 56, 100) * 2 - 1
    with torch.no_grad():
        out = as_window_model(generator, "e2fgvi_hq")(x, 2)
        padded, _ = pad_frames_for_hq(x)
        direct = generator(padded, 2)[0][:, :, :56, :100]
    assert out.shape == (3, 3, 56, 100)
    assert torch.allclose(out, direct, atol=1e-5)


@pytest.mark.slow
def test_inpaint_cli_on_the_carphone_clip(checkpoints, tmp_path):
    frames = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((100, 56), Image.BICUBIC))
            for f in carphone_frames(6)
        ]
    )
    masks = np.zeros((6, 56, 100), np.uint8)
    masks[:, 20:34, 30:55] = 255
    (tmp_path / "in").mkdir()
    (tmp_path / "m").mkdir()
    for k in range(6):
        Image.fromarray(frames[k]).save(tmp_path / "in" / f"{k:03d}.png")
        Image.fromarray(masks[k]).save(tmp_path / "m" / f"{k:03d}.png")
    ckpt = str(checkpoints["e2fgvi_hq"])
    argv = ["inpaint", "--video", str(tmp_path / "in"), "--masks", str(tmp_path / "m"),
            "--checkpoint", ckpt, "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 0
    out = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "out").glob("*.png"))])
    hole = np.stack([dilate_mask(m, 4) for m in masks]).astype(bool)
    assert out.shape == frames.shape
    assert np.array_equal(out[~hole], frames[~hole])
    assert not np.array_equal(out[hole], frames[hole])


@pytest.mark.slow
def test_evaluate_stage_end_to_end(checkpoints, tmp_path, monkeypatch, repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["model"]["variant"] = "e2fgvi_hq"
    raw["eval"].update(width=108, height=60, ssim_window=7, max_videos=1, strip_frames=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    split = {
        "first": (carphone_frames(6), box_masks(6, 144, 176)),
        "second": (carphone_frames(6, 50), box_masks(6, 144, 176)),
    }
    write_test_split(tmp_path / "yvos", split)
    uri = tracking_uri(tmp_path / "mlruns")
    logger = RunLogger(uri=uri, experiment="e2e", artifact_root=tmp_path / "mlruns")
    logger.set_tags({"stage": "train"})
    assert logger.close()
    run_file = tmp_path / "mlflow_run.json"
    run_file.write_text(json.dumps({"run_id": logger.run_id, "uri": uri, "spool": ""}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    call_stage(stage,
        ["--data", "yvos", "--checkpoint", str(checkpoints["e2fgvi_hq"]),
         "--pretrained", "absent.pt", "--run", str(run_file), "--mlruns", "mlruns",
         "--out", "reports/eval"]
    )  # fmt: skip
    summary = json.loads((tmp_path / "reports" / "eval" / "metrics.json").read_text())
    assert summary["frames"] == 6 and summary["videos"] == 1
    assert 5 < summary["psnr"] < 60 and 0 < summary["ssim"] <= 1
    (run,) = search_runs(uri, ["e2e"])
    assert run.metrics["eval/ssim"] == pytest.approx(summary["ssim"])
    assert run.tags["eval/variant"] == "e2fgvi_hq"
