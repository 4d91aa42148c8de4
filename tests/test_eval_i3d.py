"""The I3D used by VFID: state-dict layout of rgb_imagenet.pt, padding, batch-stat quirk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2fgvi.errors import UserError
from e2fgvi.eval.i3d import InceptionI3d, i3d_features, load_i3d, same_pad

# Manifest of piergiaj/pytorch-i3d's InceptionI3d(400, in_channels=3), written down from the
# constructor arguments of pytorch_i3d.py: unit -> (in, out, kernel). Every unit has a conv3d
# without bias and a BatchNorm3d, except logits (conv3d with bias, no bn).
_STEM = {
    "Conv3d_1a_7x7": (3, 64, 7),
    "Conv3d_2b_1x1": (64, 64, 1),
    "Conv3d_2c_3x3": (64, 192, 3),
}
_MIXED_ARGS = {  # in_channels, [b0, b1a, b1b, b2a, b2b, b3b], as pytorch_i3d.py spells them
    "Mixed_3b": (192, [64, 96, 128, 16, 32, 32]),
    "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "Mixed_4b": (128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64]),
    "Mixed_4c": (192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64]),
    "Mixed_4d": (160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64]),
    "Mixed_4e": (128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64]),
    "Mixed_4f": (112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128]),
    "Mixed_5b": (256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128]),
    "Mixed_5c": (256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128]),
}


def _manifest(with_counters: bool = True) -> dict[str, tuple[int, ...]]:
    units = dict(_STEM)
    for name, (c_in, w) in _MIXED_ARGS.items():
        units[f"{name}.b0"] = (c_in, w[0], 1)
        units[f"{name}.b1a"] = (c_in, w[1], 1)
        units[f"{name}.b1b"] = (w[1], w[2], 3)
        units[f"{name}.b2a"] = (c_in, w[3], 1)
        units[f"{name}.b2b"] = (w[3], w[4], 3)
        units[f"{name}.b3b"] = (c_in, w[5], 1)
    keys: dict[str, tuple[int, ...]] = {}
    for unit, (c_in, c_out, k) in units.items():
        keys[f"{unit}.conv3d.weight"] = (c_out, c_in, k, k, k)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{unit}.bn.{stat}"] = (c_out,)
        if with_counters:
            keys[f"{unit}.bn.num_batches_tracked"] = ()
    keys["logits.conv3d.weight"] = (400, 1024, 1, 1, 1)
    keys["logits.conv3d.bias"] = (400,)
    return keys


def test_state_dict_layout_matches_the_rgb_imagenet_manifest():
    state = InceptionI3d().state_dict()
    expected = _manifest()
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert len(expected) == 57 * 6 + 2  # 57 conv+bn units, the logits conv


def test_a_legacy_file_without_bn_counters_loads_strictly(tmp_path):
    # rgb_imagenet.pt predates BatchNorm's num_batches_tracked; strict loading must still work
    rng = torch.Generator().manual_seed(0)
    legacy = {
        k: torch.randn(shape, generator=rng) if shape else torch.tensor(0)
        for k, shape in _manifest(with_counters=False).items()
    }
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(legacy, path, _use_new_zipfile_serialization=False)  # the pre-1.6 file format
    loaded = load_i3d(path, torch.device("cpu")).state_dict()
    key = "Mixed_5c.b3b.conv3d.weight"
    assert torch.equal(loaded[key], legacy[key])


def test_a_saved_module_state_dict_with_metadata_loads(tmp_path):
    path = tmp_path / "rgb_imagenet.pt"
    source = InceptionI3d()
    torch.save(source.state_dict(), path, _use_new_zipfile_serialization=False)
    loaded = load_i3d(path, torch.device("cpu")).state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in source.state_dict().items())


def test_bad_weight_files_are_one_line_user_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"garbage\.pt"):
        load_i3d(garbage, torch.device("cpu"))
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match=r"rgb_imagenet\.pt layout") as info:
        load_i3d(wrong, torch.device("cpu"))
    assert "\n" not in str(info.value)


def test_same_padding():
    x = torch.zeros(1, 1, 7, 8, 9)
    # t: 7 % 2 = 1 -> pad 3 - 1 = 2; h: 8 % 2 = 0 -> pad 3 - 2 = 1; w: stride 1 -> pad 2
    assert same_pad(x, (3, 3, 3), (2, 2, 1)).shape == (1, 1, 9, 9, 11)
    assert same_pad(x, (1, 1, 1), (1, 1, 1)).shape == x.shape


def test_features_are_1024_d_and_use_batch_statistics():
    torch.manual_seed(0)
    model = InceptionI3d()
    clip = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    first = i3d_features(model, clip, torch.device("cpu"))
    assert first.shape == (1024,) and np.isfinite(first).all()
    # batch statistics: the stored running averages do not matter (official: never .eval())
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.fill_(5.0)
    assert np.allclose(i3d_features(model, clip, torch.device("cpu")), first, atol=1e-6)
    model.set_batch_stats(False)
    assert not np.allclose(i3d_features(model, clip, torch.device("cpu")), first, atol=1e-3)


def test_a_pickled_module_is_refused_in_one_line(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module: unpickling would run code
    with pytest.raises(UserError, match="refused") as info:
        load_i3d(path, torch.device("cpu"))
    assert "\n" not in str(info.value)
