"""Team storage: the prepared data goes through a real SSH remote (``dvc-ssh`` to OpenSSH's
sshd) and comes back into a fresh clone with ``dvc pull``, byte for byte.

The remote is configured as docs/operations.md tells a team to do it: the URL in the committed
``.dvc/config``, the user and key in each machine's ``.dvc/config.local``.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ssh_server
from helpers import copy_repo, git_commit_all

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PREPARED = "data/youtube-vos"


def _run(folder: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(folder / "src"), "DVC_NO_ANALYTICS": "1"}  # fmt: skip
    result = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (" ".join(args) + "\n" + result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def _dvc(folder: Path, *args: str) -> str:
    return _run(folder, str(BIN / "dvc"), *args)


def _credentials(folder: Path, server: ssh_server.SshServer) -> None:
    """What each teammate sets once per clone (kept out of git in .dvc/config.local)."""
    _dvc(folder, "remote", "modify", "--local", "team", "user", server.user)
    _dvc(folder, "remote", "modify", "--local", "team", "keyfile", str(server.keyfile))


def _same_tree(left: Path, right: Path) -> None:
    compared = filecmp.dircmp(left, right)
    assert not compared.left_only and not compared.right_only and not compared.diff_files
    _, mismatch, errors = filecmp.cmpfiles(left, right, compared.common_files, shallow=False)
    assert not mismatch and not errors
    for sub in compared.common_dirs:
        _same_tree(left / sub, right / sub)


def test_prepared_data_reaches_a_fresh_clone_through_an_ssh_remote(tmp_path):
    server = ssh_server.start(tmp_path / "sshd")
    try:
        project = copy_repo(tmp_path / "project")
        (project / "dvc.lock").unlink(missing_ok=True)
        git_commit_all(project)
        storage = tmp_path / "team-storage"
        _dvc(project, "remote", "add", "-d", "team", f"ssh://127.0.0.1:{server.port}{storage}")
        _credentials(project, server)
        _dvc(project, "repro", "prepare")
        _run(project, "git", "add", "dvc.lock", ".dvc/config")
        _run(project, "git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
             "commit", "-qm", "prepared data and the team remote")  # fmt: skip
        pushed = _dvc(project, "push", "prepare")
        assert "pushed" in pushed and any((storage / "files" / "md5").rglob("*"))

        clone = tmp_path / "clone"
        _run(tmp_path, "git", "clone", "-q", str(project), str(clone))
        assert not (clone / PREPARED).exists()
        _credentials(clone, server)
        _dvc(clone, "pull", "prepare")
        for name in ("JPEGImages", "train.json", "test.json"):
            assert (clone / PREPARED / name).exists(), name
        _same_tree(project / PREPARED / "JPEGImages", clone / PREPARED / "JPEGImages")
        assert filecmp.cmp(project / PREPARED / "train.json", clone / PREPARED / "train.json")
        assert "in sync" in _dvc(clone, "status", "--cloud", "prepare")
    finally:
        ssh_server.stop(server.process)
    assert "Accepted publickey" in server.log.read_text()
