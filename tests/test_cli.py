"""The ``e2fgvi`` command line: user-facing help, --version, -v on either side, bare commands."""

from __future__ import annotations

import importlib.metadata
import logging

import pytest

from e2fgvi import cli, doctor


def test_help_is_a_users_description_of_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "module" not in out  # no developer docstring
    assert out.splitlines()[2].startswith("Check this machine, inpaint videos")
    for name, (_, summary) in cli.COMMANDS.items():
        assert f"{name}" in out and summary in out


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"e2fgvi {importlib.metadata.version('e2fgvi-repro')}"


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [(["doctor"], False), (["-v", "doctor"], True), (["doctor", "-v"], True),
     (["--verbose", "doctor", "--json"], True), (["doctor", "--json", "--verbose"], True)],
)  # fmt: skip
def test_verbose_works_before_and_after_the_command(monkeypatch, argv, verbose):
    seen = {}
    monkeypatch.setattr(doctor, "run", lambda args: seen.setdefault("args", args) and 0)
    assert cli.main(argv) == 0
    assert seen["args"].verbose is verbose
    expected = logging.DEBUG if verbose else logging.INFO
    assert logging.getLogger().level == expected


def test_a_bare_command_with_an_action_says_what_to_type(capsys):
    assert cli.main(["cost"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: e2fgvi cost")
    assert err[-1].startswith("e2fgvi cost: say what to do: compare (e.g. 'e2fgvi cost compare'")
    assert cli.main(["cost", "-v"]) == 2


def test_no_command_is_a_hint_not_a_traceback(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: e2fgvi") and "'e2fgvi --help' lists them" in err


def test_a_command_without_an_action_is_not_hinted():
    _, commands = cli.build_parser("doctor")
    assert cli.missing_action_hint(commands["doctor"], "doctor") is None


@pytest.mark.parametrize("device", ["mps", "cuda:x", "CPU"])  # "gpu" would be a marker keyword
def test_inpaint_refuses_an_unknown_device_name(capsys, device):
    argv = ["inpaint", "--video", "v.mp4", "--masks", "m", "--checkpoint", "c.pth",
            "--out", "o.mp4", "--device", device]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "use auto, cpu, cuda or cuda:N" in capsys.readouterr().err
