"""State-dict layout == the official one (reference e2fgvi_state_dict.json); weight loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from e2fgvi.config import ModelParams
from e2fgvi.errors import UserError
from e2fgvi.model import (
    Discriminator,
    InpaintGenerator,
    SPyNet,
    build_flow_teacher,
    build_generator,
    load_generator_state,
    load_spynet_weights,
)
from e2fgvi.weights import CHECKPOINT_FORMAT

# Keys, shapes, kinds and dtypes of the official modules (from the reference instantiation).
MANIFEST = Path(__file__).parent / "data" / "e2fgvi_state_dict.json"
OFFICIAL_PARAMS = {"e2fgvi": 41_799_743, "e2fgvi_hq": 41_117_887, "discriminator": 4_461_728}


def _layout(module: torch.nn.Module) -> dict[str, dict]:
    params = dict(module.named_parameters())
    return {
        key: {
            "shape": list(value.shape),
            "kind": "param" if key in params else "buffer",
            "dtype": str(value.dtype).removeprefix("torch."),
        }
        for key, value in module.state_dict().items()
    }


@pytest.fixture(scope="module")
def generators():
    torch.manual_seed(0)
    return {variant: InpaintGenerator(variant) for variant in ("e2fgvi", "e2fgvi_hq")}


@pytest.mark.parametrize(
    ("variant", "section"), [("e2fgvi", "generator_e2fgvi"), ("e2fgvi_hq", "generator_e2fgvi_hq")]
)
def test_generator_layout_equals_manifest(generators, variant, section):
    expected = json.loads(MANIFEST.read_text())[section]
    assert _layout(generators[variant]) == expected


def test_discriminator_layout_equals_manifest():
    expected = json.loads(MANIFEST.read_text())["discriminator"]
    assert _layout(Discriminator()) == expected


def test_parameter_counts(generators):
    for variant, model in generators.items():
        assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[variant]
    counted = sum(p.numel() for p in Discriminator().parameters())
    assert counted == OFFICIAL_PARAMS["discriminator"]


def test_initialisation_follows_the_official_recipe(generators):
    g = generators["e2fgvi"]
    assert abs(g.encoder.layers[8].weight.std().item() - 0.02) < 1e-3
    assert torch.all(g.encoder.layers[8].bias == 0)
    pool = g.transformer[0].pool_layers[0].weight
    assert not torch.allclose(pool, torch.full_like(pool, 1 / 45))  # re-initialised N(0, 0.02)
    dcn = g.feat_prop_module.deform_align["backward_"]
    bound = 1 / (256 * 9) ** 0.5
    assert dcn.weight.abs().max() <= bound and dcn.weight.abs().max() > 0.9 * bound
    assert torch.all(dcn.conv_offset[6].weight == 0) and torch.all(dcn.conv_offset[6].bias == 0)
    assert dcn.conv_offset[0].weight.std() > 0.015
    assert torch.all(g.transformer[0].norm1.weight == 1) and torch.all(g.sc.bias == 0)
    disc = Discriminator()
    assert abs(disc.conv[2].weight_orig.std().item() - 0.02) < 2e-3
    assert torch.all(disc.conv[10].bias == 0)


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = Discriminator().state_dict()
    torch.manual_seed(3)
    b = Discriminator().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("wrap", ["official", "ours", "ours_plain", "ddp"])
def test_checkpoints_round_trip_strict(generators, tmp_path, wrap):
    model = generators["e2fgvi_hq"]
    state = model.state_dict()
    payload = {
        "official": state,
        "ours": {"format": CHECKPOINT_FORMAT, "generator": state, "step": 7},
        "ours_plain": dict(state),
        "ddp": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(payload, tmp_path / "gen.pth")
    loaded = load_generator_state(tmp_path / "gen.pth", "e2fgvi_hq")
    fresh = InpaintGenerator("e2fgvi_hq")
    fresh.load_state_dict(loaded, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], state[k]) for k in state)


def test_wrong_variant_names_the_mismatching_keys(generators, tmp_path):
    torch.save(generators["e2fgvi"].state_dict(), tmp_path / "e2fgvi.pth")
    with pytest.raises(UserError) as err:
        load_generator_state(tmp_path / "e2fgvi.pth", "e2fgvi_hq")
    message = str(err.value)
    assert "\n" not in message and "e2fgvi.pth" in message
    assert "missing keys sc.bias_conv.bias, sc.bias_conv.weight" in message
    assert "unexpected keys sc.bias" in message and "model.variant: e2fgvi" in message


def test_foreign_files_are_refused_in_one_line(tmp_path):
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(UserError, match=r"missing keys .*unexpected keys conv\.weight"):
        load_generator_state(tmp_path / "foreign.pth", "e2fgvi")
    torch.save({"format": "something-else", "generator": {}}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a generator state_dict"):
        load_generator_state(tmp_path / "other.pth", "e2fgvi")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pth"):
        load_generator_state(tmp_path / "junk.pth", "e2fgvi")
    with pytest.raises(UserError, match="not found"):
        load_generator_state(tmp_path / "absent.pth", "e2fgvi")


class _CarriesCode:
    """Unpickling this would call open(marker, 'w'), i.e. create a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"encoder.layers.0.weight": _CarriesCode(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(tmp_path / "evil.pth", weights_only=True)
    with pytest.raises(UserError, match="refused"):
        load_generator_state(tmp_path / "evil.pth", "e2fgvi")
    assert not marker.exists()


def _spynet_file(path: Path, wrap: bool) -> SPyNet:
    torch.manual_seed(5)
    source = SPyNet()
    state = {f"basic_module.{k}": v for k, v in source.basic_module.state_dict().items()}
    assert len(state) == 60
    torch.save({"meta": {"note": "x"}, "state_dict": state} if wrap else state, path)
    return source


@pytest.mark.parametrize("wrap", [False, True])
def test_spynet_pretrained_loading(tmp_path, wrap):
    source = _spynet_file(tmp_path / "spynet.pth", wrap)
    loaded = load_spynet_weights(SPyNet(), tmp_path / "spynet.pth")
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.parameters(), source.parameters(), strict=True)
    )


def test_spynet_wrong_layout_is_one_line(tmp_path):
    torch.save({"basic_module.0.basic_module.0.conv.weight": torch.zeros(1)}, tmp_path / "s.pth")
    with pytest.raises(UserError, match=r"s\.pth: not the OpenMMLab SPyNet layout \(missing"):
        load_spynet_weights(SPyNet(), tmp_path / "s.pth")


def test_build_generator_pretrained_and_random(tmp_path):
    source = _spynet_file(tmp_path / "spynet.pth", wrap=False)
    cfg = ModelParams(variant="e2fgvi_hq", spynet_init="pretrained")
    generator = build_generator(cfg, tmp_path / "spynet.pth")
    assert torch.equal(
        generator.update_spynet.basic_module[3].basic_module[1].conv.weight,
        source.basic_module[3].basic_module[1].conv.weight,
    )
    teacher = build_flow_teacher(cfg, tmp_path / "spynet.pth")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    random_cfg = ModelParams(variant="e2fgvi", spynet_init="random")
    assert isinstance(build_generator(random_cfg, None), InpaintGenerator)
    assert isinstance(build_flow_teacher(random_cfg, tmp_path / "absent.pth"), SPyNet)


def test_missing_spynet_file_names_the_fixes(tmp_path):
    cfg = ModelParams(variant="e2fgvi_hq", spynet_init="pretrained")
    for builder in (build_generator, build_flow_teacher):
        with pytest.raises(UserError) as err:
            builder(cfg, tmp_path / "spynet.pth")
        message = str(err.value)
        assert "\n" not in message and str(tmp_path / "spynet.pth") in message
        assert "data.pretrained.spynet.fetch: true" in message and "dvc repro pretrained" in message
        assert "model.spynet_init: random" in message
