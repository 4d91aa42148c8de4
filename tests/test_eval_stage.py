"""The evaluate stage: files, MLflow run, VFID note, one-line errors (model injected here)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from _clips import box_masks, carphone_frames, write_test_split
from _stages import call_stage

from e2fgvi.errors import UserError
from e2fgvi.stages import evaluate as stage
from e2fgvi.tracking import RunLogger, list_artifacts, search_runs, tracking_uri


def _zero_model(x: torch.Tensor, num_local: int) -> torch.Tensor:
    return torch.zeros(x.shape[0] * x.shape[1], *x.shape[2:])


@pytest.fixture
def workspace(tmp_path, monkeypatch, repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["eval"].update(max_videos=1, strip_frames=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write_test_split(tmp_path / "yvos", {"clip": (carphone_frames(11), box_masks(11, 144, 176))})
    mlruns = tmp_path / "mlruns"
    uri = tracking_uri(mlruns)
    logger = RunLogger(uri=uri, experiment="eval-test", artifact_root=mlruns)
    logger.set_tags({"stage": "train"})
    assert logger.close()
    run_file = tmp_path / "run" / "mlflow_run.json"
    run_file.parent.mkdir()
    run_file.write_text(json.dumps({"run_id": logger.run_id, "uri": uri, "spool": ""}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(stage, "load_window_model", lambda *a: (_zero_model, "e2fgvi_hq"))
    # No generator file here: logging it as an MLflow model is tested in test_mlflow_model.py.
    monkeypatch.setattr(stage, "model_record", lambda *a: None)
    return tmp_path, uri, logger.run_id


def _argv(root, pretrained="missing/rgb_imagenet.pt"):
    return [
        "--data", str(root / "yvos"), "--checkpoint", str(root / "run" / "generator.pth"),
        "--pretrained", str(root / pretrained), "--run", str(root / "run" / "mlflow_run.json"),
        "--mlruns", str(root / "mlruns"), "--out", str(root / "reports" / "eval"),
    ]  # fmt: skip


def test_stage_writes_metrics_csv_strip_and_logs_to_the_run(workspace):
    root, uri, run_id = workspace
    call_stage(stage, _argv(root))
    out = root / "reports" / "eval"
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["frames"] == 11 and summary["videos"] == 1
    assert all(v is None or isinstance(v, int | float) for v in summary.values())  # DVC metrics
    details = json.loads((out / "details.json").read_text())
    size = yaml.safe_load((root / "params.yaml").read_text())["eval"]
    assert (
        details["variant"] == "e2fgvi_hq" and details["size"] == f"{size['width']}x{size['height']}"
    )
    assert 10 < summary["psnr"] < 60 and 0 < summary["ssim"] < 1
    assert summary["vfid"] is None and "not found" in details["vfid_note"]
    rows = list(csv.DictReader((out / "per_video.csv").open()))
    assert [r["video"] for r in rows] == ["clip"]
    assert float(rows[0]["psnr"]) == pytest.approx(summary["psnr"], abs=1e-5)
    assert (out / "strip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (run,) = search_runs(uri, ["eval-test"])
    assert run.run_id == run_id
    assert run.metrics["eval/psnr"] == pytest.approx(summary["psnr"])
    assert run.metrics["eval/frames"] == 11 and "eval/vfid" not in run.metrics
    assert "not found" in run.tags["eval/vfid_note"]
    assert sorted(list_artifacts(uri, run_id, "eval")) == [
        "eval/details.json", "eval/metrics.json", "eval/per_video.csv", "eval/strip.png",
    ]  # fmt: skip


def test_variant_e2fgvi_at_the_sample_size_is_a_one_line_error(workspace):
    root, _, _ = workspace
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["model"]["variant"] = "e2fgvi"
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="432x240 only") as info:
        call_stage(stage, _argv(root))
    assert "\n" not in str(info.value)


def test_missing_run_file_is_a_user_error(workspace):
    root, _, _ = workspace
    (root / "run" / "mlflow_run.json").unlink()
    with pytest.raises(UserError, match="run the train stage first"):
        call_stage(stage, _argv(root))


@pytest.mark.parametrize("window", [16, 65])
def test_ssim_window_that_skimage_refuses_is_a_one_line_error_before_evaluating(workspace, window):
    root, _, _ = workspace
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["eval"]["ssim_window"] = window  # even, or wider than the 60-pixel sample frames
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"eval\.ssim_window") as info:
        call_stage(stage, _argv(root))
    assert "\n" not in str(info.value)
    assert not (root / "reports" / "eval").exists()
