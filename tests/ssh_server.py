"""A real OpenSSH server (Debian's ``openssh-server``) on 127.0.0.1 for tests of the SSH remote.

It runs as this user, on a free port, with throwaway host and client keys in a temporary folder
and key login only; nothing outside that folder is touched, except that ``sshd``'s privilege
separation folder (``/run/sshd``) is created when it is missing and we are root.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow_server import free_port

SSHD = "/usr/sbin/sshd"


@dataclass
class SshServer:
    process: subprocess.Popen
    port: int
    user: str
    keyfile: Path  # the client's private key
    log: Path


def sshd_or_skip() -> str:
    """The sshd binary; outside CI a missing one skips, in CI it fails (.ci/run installs it)."""
    if Path(SSHD).is_file() and shutil.which("ssh-keygen"):
        return SSHD
    reason = "openssh-server is not installed (apt-get install -y openssh-server)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run installs it before make test")
    pytest.skip(reason)


def _keygen(path: Path) -> None:
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)]
    subprocess.run(command, check=True, capture_output=True)


def start(folder: Path) -> SshServer:
    """sshd on a free port of 127.0.0.1, accepting only the generated client key."""
    sshd = sshd_or_skip()
    folder.mkdir(parents=True, exist_ok=True)
    _keygen(folder / "host_key")
    _keygen(folder / "client_key")
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\n"
    )
    log = folder / "sshd.log"
    command = [sshd, "-D", "-e", "-f", str(config)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    _wait_listening(port, process, log)
    return SshServer(process, port, getpass.getuser(), folder / "client_key", log)


def _wait_listening(port: int, process: subprocess.Popen, log: Path, limit_s: float = 30) -> None:
    begin = time.monotonic()
    while time.monotonic() - begin < limit_s:
        if process.poll() is not None:
            pytest.fail(f"sshd exited ({process.returncode}):\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    stop(process)
    pytest.fail(f"sshd not listening after {limit_s} s:\n{log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM sshd's process group (the listener and any session it forked)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
