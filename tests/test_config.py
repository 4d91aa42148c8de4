"""The typed config: strict loading, one-line errors naming file and key."""

from __future__ import annotations

import re

import pytest
import yaml

from e2fgvi.config import ConfigError, Params, flatten, load_params, params_hash, parse_params


def _write(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sample_params_load(params):
    assert params.data.source == "sample"
    assert params.model.variant == "e2fgvi_hq"


def test_official_params_equal_code_defaults(repo_root):
    assert load_params(repo_root / "params.official.yaml") == Params()


def test_official_recipe_values():
    p = Params()
    assert (p.train.lr, p.train.betas, p.train.iterations) == (1e-4, [0.0, 0.99], 500_000)
    assert (p.train.milestones, p.train.gamma, p.train.batch_size) == ([400_000], 0.1, 8)
    assert (p.train.width, p.train.height) == (432, 240)
    assert (p.train.num_local_frames, p.train.num_ref_frames) == (5, 3)
    assert p.loss.adversarial_weight == 0.01


def test_every_key_written_out(repo_root):
    """Both params files spell out every key, so no value silently falls back to a default."""
    expected = set(flatten(Params()))
    for name in ("params.yaml", "params.official.yaml"):
        raw = yaml.safe_load((repo_root / name).read_text())
        assert set(flatten(raw)) == expected, name


def test_unknown_key_names_file_and_path(tmp_path, repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["train"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match=r"params\.yaml: unknown key 'train\.lrr'"):
        load_params(_write(tmp_path, raw))


def test_wrong_type_names_key(tmp_path, repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"key 'train\.lr'.*'fast'"):
        load_params(_write(tmp_path, raw))


def test_bool_is_not_a_number(tmp_path, repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["loss"]["hole_weight"] = True
    with pytest.raises(ConfigError, match=r"loss\.hole_weight"):
        load_params(_write(tmp_path, raw))


def test_bad_choice_and_missing_file(tmp_path, repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["model"]["variant"] = "e2fgvi_xl"
    with pytest.raises(ConfigError, match=r"model\.variant"):
        load_params(_write(tmp_path, raw))
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_frozen_and_hash_stable(params):
    with pytest.raises(Exception, match="frozen"):
        params.train.lr = 1.0
    assert params_hash(params.model) == params_hash(params.model)
    assert params_hash(params.model) != params_hash(Params().model)
    assert flatten(params)["train.lr"] == params.train.lr


@pytest.mark.parametrize("betas", [[0.9], [0.0, 0.99, 0.5], [0.0, 1.0]])
def test_adam_betas_are_checked_at_load(betas):
    with pytest.raises(ConfigError, match=r"train\.betas"):
        parse_params({"train": {"betas": betas}}, "p.yaml")


@pytest.mark.parametrize("name", ["params.yaml", "params.official.yaml"])
@pytest.mark.parametrize(
    ("written", "key", "value"),
    [
        ("1e-4", "train.lr", 1e-4),
        ("2E-4", "train.lr", 2e-4),
        ("15e-2", "cost.price_per_kwh", 0.15),
        ("1.0e1", "loss.hole_weight", 10.0),
        ("[0.0, 99e-2]", "train.betas", [0.0, 0.99]),
        ("3e1", "tracking.retry_interval_s", 30.0),
    ],
)
def test_exponent_floats_as_users_write_them(tmp_path, repo_root, name, written, key, value):
    """YAML 1.1 reads `1e-4` (no dot) and `1.0e-2` (no exponent sign) as strings; DVC reads YAML
    1.2, where both are floats, and so must we."""
    section, leaf = key.split(".")
    text = (repo_root / name).read_text()
    # The key's line (and a block list under it) becomes `leaf: <written>`, as a user edits it.
    edited, count = re.subn(
        rf"^({section}:\n(?:  .*\n)*?  {leaf}:).*(?:\n  - .*)*$", rf"\g<1> {written}", text,
        count=1, flags=re.M,
    )  # fmt: skip
    assert count == 1, f"{name} has no {key}"
    path = tmp_path / name
    path.write_text(edited)
    assert getattr(getattr(load_params(path), section), leaf) == pytest.approx(value)


def test_a_number_where_text_is_expected_is_still_one_line(tmp_path, repo_root):
    raw = (repo_root / "params.yaml").read_text().replace('run_name: ""', "run_name: 1e3")
    path = tmp_path / "params.yaml"
    path.write_text(raw)
    with pytest.raises(ConfigError, match=r"key 'tracking\.run_name'.*got 1000\.0"):
        load_params(path)


def test_a_huge_wrong_value_is_shown_short_and_cut_between_words():
    with pytest.raises(ConfigError) as info:
        parse_params({"train": {"lr": {f"key{i}": "value words" for i in range(200)}}}, "p.yaml")
    shown = str(info.value)
    assert len(shown) < 200 and "…" in shown and "\n" not in shown


def _commented_keys(text: str) -> list[str]:
    """Dotted keys whose line (or section line) carries a comment, in file order."""
    keys, stack = [], []
    for line in text.splitlines():
        found = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not found:
            continue
        indent = len(found.group(1))
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, found.group(2))]
        if "#" in line:
            keys.append(".".join(k for _, k in stack))
    return keys


def test_the_official_params_carry_the_sample_params_comments(repo_root):
    """`cp params.official.yaml params.yaml` keeps every explanatory comment."""
    sample = (repo_root / "params.yaml").read_text(encoding="utf-8")
    official = (repo_root / "params.official.yaml").read_text(encoding="utf-8")
    assert _commented_keys(official) == _commented_keys(sample)
    assert len(_commented_keys(sample)) > 20
