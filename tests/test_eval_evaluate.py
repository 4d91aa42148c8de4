"""Evaluation end to end on a tiny prepared split, with models whose metrics are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _clips import box_masks, carphone_frames, decoded_zip_frames, write_test_split
from PIL import Image
from scipy.ndimage import binary_dilation, generate_binary_structure
from skimage.metrics import structural_similarity

from e2fgvi.config import EvalParams
from e2fgvi.errors import UserError
from e2fgvi.eval import metrics
from e2fgvi.eval.evaluate import evaluate
from e2fgvi.eval.i3d import InceptionI3d, i3d_features

CPU = torch.device("cpu")
SIZE = (216, 120)


def _zero_model(x: torch.Tensor, num_local: int) -> torch.Tensor:
    return torch.zeros(x.shape[0] * x.shape[1], *x.shape[2:])


@pytest.fixture(scope="module")
def split(module_folder):
    root = module_folder("yvos")
    videos = {
        "carA": (carphone_frames(12), box_masks(12, 144, 176)),
        "carB": (carphone_frames(14, start=40), box_masks(14, 144, 176)[::-1].copy()),
    }
    write_test_split(root, videos)
    return root, videos


def _expected_scores(frames, masks):
    """Zero model: the hole becomes 127 everywhere; computed without the package's helpers.

    ``frames`` are the decoded JPEGs of the zip, ``masks`` the mask images as written.
    """
    cross = generate_binary_structure(2, 1)
    psnrs, ssims = [], []
    for frame, mask in zip(frames, masks, strict=True):
        gt = np.asarray(Image.fromarray(frame).resize(SIZE, Image.BICUBIC)).astype(np.float64)
        hole = np.asarray(Image.fromarray(mask).resize(SIZE, Image.NEAREST)) > 0
        hole = binary_dilation(hole, cross, iterations=4)
        comp = np.where(hole[..., None], 127.0, gt)
        mse = np.mean((gt - comp) ** 2)
        psnrs.append(20 * math.log10(255 / math.sqrt(mse)))
        ssims.append(structural_similarity(gt, comp, win_size=65, data_range=255, channel_axis=2))
    return psnrs, ssims


def test_frame_weighted_psnr_ssim_of_a_known_completion(split):
    root, videos = split
    params = EvalParams(width=SIZE[0], height=SIZE[1], strip_frames=3)
    report = evaluate(root, _zero_model, params, device=CPU, i3d_note="no weights here")
    psnrs, ssims = [], []
    for name, (_, masks) in videos.items():
        p, s = _expected_scores(decoded_zip_frames(root / "JPEGImages" / f"{name}.zip"), masks)
        psnrs += p
        ssims += s
    summary = report.summary()
    assert summary["frames"] == 26 and summary["videos"] == 2
    assert report.frame_psnr == pytest.approx(psnrs, abs=1e-9)
    assert summary["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-9)  # frame-weighted
    assert summary["ssim"] == pytest.approx(np.mean(ssims), abs=1e-9)
    assert summary["vfid"] is None and summary["vfid_note"] == "no weights here"
    assert summary["fps"] > 0
    assert [v.video for v in report.videos] == ["carA", "carB"]
    assert report.strip.shape == (24 + 3 * SIZE[1], 4 * SIZE[0], 3)


def test_vfid_uses_ground_truth_and_completed_clips(split):
    root, _ = split
    torch.manual_seed(0)
    i3d = InceptionI3d()
    small = (108, 60)  # I3D is the slow part; a small size keeps this test quick
    params = EvalParams(width=small[0], height=small[1], ssim_window=7, max_videos=2)
    report = evaluate(root, _zero_model, params, device=CPU, i3d=i3d)
    assert report.vfid is not None and report.vfid > 0
    assert "rank <= 1" in report.vfid_note
    # the same number from features computed here, GT vs a hand-built completion
    real, fake = [], []
    from e2fgvi.eval.testset import load_frames, load_masks, read_index

    for video, count in read_index(root).items():
        gt = load_frames(root, video, count, small)
        hole = load_masks(root, video, count, small, 4).astype(bool)
        comp = np.where(hole[..., None], np.uint8(127), gt)
        real.append(i3d_features(i3d, gt, CPU))
        fake.append(i3d_features(i3d, comp, CPU))
    assert report.vfid == pytest.approx(metrics.vfid(np.stack(real), np.stack(fake)), rel=1e-6)


def test_max_videos_limits_and_one_video_skips_vfid(split):
    root, _ = split
    params = EvalParams(width=108, height=60, ssim_window=7, max_videos=1)
    report = evaluate(root, _zero_model, params, device=CPU, i3d=InceptionI3d())
    assert [v.video for v in report.videos] == ["carA"] and report.frames == 12
    assert report.vfid is None and "at least 2 videos" in report.vfid_note


def test_a_frame_count_mismatch_names_the_zip(split, tmp_path):
    _, videos = split
    broken = tmp_path / "broken"
    write_test_split(broken, {"carA": videos["carA"]})
    (broken / "test.json").write_text('{"carA": 13}')
    with pytest.raises(UserError, match=r"carA\.zip: holds 12 frames but test.json says 13"):
        evaluate(broken, _zero_model, EvalParams(width=216, height=120), device=CPU)
