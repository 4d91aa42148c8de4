"""The loader's ``train.decode: reduced`` option: faster JPEG decoding, pixels close to exact.

``exact`` (the default) is the official loader's pixels: full-size decode, PIL bicubic resize.
``reduced`` lets libjpeg decode a source at least 2x the clip size at 1/2 (1/4, 1/8) of its size
before the same resize. On the real sample frames (432x240 JPEGs), clips at 216x120 (1/2
decode) and 108x60 (1/4 decode) must stay within ``MIN_PSNR`` of the exact frames, frame by
frame; the masks and every random choice stay identical.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from e2fgvi.data.dataset import TrainClips
from e2fgvi.data.frames import VideoZip, load_index, reduction_for, resize_frame

# dB, worst frame of 8 clips; measured here: 40.1 at 1/2 decode (216x120 clips), 38.5 at 1/4
# (108x60). Big Buck Bunny 1280x720 q90 -> 432x240 (1/2 decode): 48.1 dB (docs/speed.md).
MIN_PSNR = {2: 38.0, 4: 36.0}


def _clips(params, data, width: int, height: int, decode: str) -> TrainClips:
    train = params.train.model_copy(
        update={"width": width, "height": height, "decode": decode, "flip_prob": 0.0}
    )
    masks = params.masks.model_copy(update={"width": width, "height": height})
    return TrainClips(data / "JPEGImages", data / "train.json", train, masks, params.seed)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Per-frame minimum PSNR of clips in [-1, 1], in 8-bit units."""
    diff = (a - b) * 127.5
    mse = diff.square().flatten(1).mean(1)
    return float((10 * torch.log10(255**2 / mse.clamp_min(1e-12))).min())


@pytest.mark.parametrize(("width", "height", "factor"), [(216, 120, 2), (108, 60, 4)])
def test_reduced_decode_is_within_the_stated_psnr_of_exact(
    params, sample_dataset, width, height, factor
):
    exact = _clips(params, sample_dataset, width, height, "exact")
    reduced = _clips(params, sample_dataset, width, height, "reduced")
    worst = []
    for i in range(len(exact)):
        (fe, me), (fr, mr) = exact[i], reduced[i]
        assert torch.equal(me, mr) and fe.shape == fr.shape == (8, 3, height, width)
        assert not torch.equal(fe, fr)  # the option does change the pixels
        worst.append(_psnr(fr, fe))
    print(f"{width}x{height}: min PSNR per clip {[round(p, 1) for p in worst]}")
    assert min(worst) >= MIN_PSNR[factor]


def test_exact_decode_is_the_full_decode_and_pil_bicubic(params, sample_dataset):
    clips = _clips(params, sample_dataset, 216, 120, "exact")
    frames, _ = clips[0]
    video = clips.videos[clips.video_of(0)]
    ids = clips.frame_ids(
        np.random.default_rng([params.seed, 0]), load_index(sample_dataset / "train.json")[video]
    )
    with VideoZip(sample_dataset / "JPEGImages" / f"{video}.zip") as handle:
        raw = [handle._handle().read(handle.names[i]) for i in ids]
    expected = []
    for data in raw:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        rgb = resize_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (216, 120))
        expected.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    assert torch.equal(frames, torch.stack(expected))


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("source", "clip", "factor"),
    [
        ((1280, 720), (432, 240), 2),
        ((1280, 720), (640, 360), 2),
        ((1280, 720), (641, 360), 1),
        ((432, 240), (432, 240), 1),
        ((432, 240), (108, 60), 4),
        ((3840, 2160), (432, 240), 8),
    ],
)
def test_reduction_never_goes_below_the_clip_size(source, clip, factor):
    assert reduction_for(_jpeg(*source), clip, "x.jpg") == factor
