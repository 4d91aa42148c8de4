"""Run a command where a folder really is read-only, full, or closed to the user — also as root.

Tests run as root (here and in CI), and root ignores file modes, so ``chmod`` alone proves
nothing. The command runs instead in a private mount namespace (``unshare -m``), where:

- ``read_only`` folders are bind-mounted onto themselves read-only (EROFS);
- ``full`` folders are replaced by a tmpfs of the given size in bytes (ENOSPC once it fills);
- ``no_override`` drops the capabilities that let root ignore modes (``setpriv``), so a folder
  with mode 0555 refuses writes with EACCES as it would for any user.

The mounts vanish with the namespace; ``Confined.files`` lists what the command left in each
``full`` folder (read inside the namespace, before the tmpfs goes away).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_NO_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


@dataclass
class Confined:
    returncode: int
    stdout: str
    stderr: str
    files: dict[Path, list[str]] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        """The ERROR lines an entry point logged."""
        return [line for line in self.stderr.splitlines() if " ERROR " in line]


def require_namespaces() -> None:
    """Skip (with the reason) where mount namespaces cannot be made (not root, no unshare);
    in CI (CI=true, which runs as root) that is a failure, not a skip."""
    missing = None
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        missing = "needs util-linux unshare and setpriv"
    else:
        probe = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True
        )
        if probe.returncode != 0:
            missing = f"cannot make a mount namespace here: {probe.stderr.strip()}"
    if missing and os.environ.get("CI") == "true":
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)


def run_confined(
    argv: list[str],
    *,
    read_only: tuple[Path, ...] = (),
    full: dict[Path, int] | None = None,
    no_override: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> Confined:
    """Run ``argv`` under the given faults; see the module docstring."""
    require_namespaces()
    full = full or {}
    listing = Path(os.environ.get("TMPDIR", "/tmp")) / f"confined-{os.getpid()}-{id(full)}.txt"
    script = ["set -e"]
    for folder, size in full.items():
        folder.mkdir(parents=True, exist_ok=True)
        script.append(f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(folder))}")
    for folder in read_only:
        q = shlex.quote(str(folder))
        script += [f"mount --bind {q} {q}", f"mount -o remount,bind,ro {q}"]
    script.append("set +e")
    prefix = " ".join(map(shlex.quote, _NO_OVERRIDE)) + " " if no_override else ""
    script.append(f'{prefix}"$@"; rc=$?')
    for folder in full:
        q = shlex.quote(str(folder))
        script.append(f"(cd {q} && find . -mindepth 1 | sed 's|^|{q}\t|') >> {listing}")
    script.append("exit $rc")
    command = ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script), "sh"]
    base_env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **(env or {})}
    result = subprocess.run(
        [*command, *argv], cwd=cwd, env=base_env, capture_output=True, text=True, timeout=timeout
    )
    files: dict[Path, list[str]] = {folder: [] for folder in full}
    if listing.exists():
        for line in listing.read_text().splitlines():
            folder, _, name = line.partition("\t")
            files[Path(folder)].append(name.removeprefix("./"))
        listing.unlink()
    return Confined(result.returncode, result.stdout, result.stderr, files)


def python(*args: str) -> list[str]:
    """This interpreter with ``args`` (for ``run_confined``)."""
    return [sys.executable, *args]
