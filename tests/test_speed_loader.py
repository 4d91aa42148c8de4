"""The loader's ``train.decode`` options: faster JPEG decoding, pixels close to exact.

``exact`` (the default) is the official loader's pixels: full-size decode, PIL bicubic resize.
``reduced`` lets libjpeg decode a source at least 2x the clip size at 1/2 (1/4, 1/8) of its size
before the same resize; ``reduced_area`` then resizes with OpenCV's area filter instead. On the
real sample frames (432x240 JPEGs), clips at 216x120 (1/2 decode), 108x60 (1/4 decode) and
144x80 (1/2 decode, then a resize) must stay within ``MIN_PSNR`` of the exact frames, frame by
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

# dB, worst frame of 8 clips, by (decode, clip width, clip height); measured here: reduced 40.1
# at 216x120 (1/2 decode, no resize), 38.5 at 108x60 (1/4 decode, no resize), 44.1 at 144x80
# (1/2 decode, then bicubic); reduced_area 37.8 at 144x80 (1/2 decode, then area resize).
# Big Buck Bunny 1280x720 q90 -> 432x240: 48.1 and 43.4 dB (docs/speed.md).
MIN_PSNR = {
    ("reduced", 216, 120): 38.0,
    ("reduced", 108, 60): 36.0,
    ("reduced", 144, 80): 42.0,
    ("reduced_area", 144, 80): 36.0,
}


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


@pytest.mark.parametrize(("decode", "width", "height"), list(MIN_PSNR))
def test_reduced_decode_is_within_the_stated_psnr_of_exact(
    params, sample_dataset, decode, width, height
):
    exact = _clips(params, sample_dataset, width, height, "exact")
    reduced = _clips(params, sample_dataset, width, height, decode)
    worst = []
    for i in range(len(exact)):
        (fe, me), (fr, mr) = exact[i], reduced[i]
        assert torch.equal(me, mr) and fe.shape == fr.shape == (8, 3, height, width)
        assert not torch.equal(fe, fr)  # the option does change the pixels
        worst.append(_psnr(fr, fe))
    print(f"{decode} {width}x{height}: min PSNR per clip {[round(p, 1) for p in worst]}")
    assert min(worst) >= MIN_PSNR[decode, width, height]


def test_reduced_area_resizes_only_what_the_reduced_decode_leaves(params, sample_dataset):
    """At 216x120 the 1/2 decode of a 432x240 source is already the clip size: no resize, so
    ``reduced_area`` gives exactly ``reduced``'s pixels; at 144x80 it resizes, differently."""
    both = ("reduced", "reduced_area")
    assert torch.equal(*[_clips(params, sample_dataset, 216, 120, d)[0][0] for d in both])
    assert not torch.equal(*[_clips(params, sample_dataset, 144, 80, d)[0][0] for d in both])


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
