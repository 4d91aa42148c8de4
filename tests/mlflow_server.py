"""A real ``mlflow server`` process on 127.0.0.1 for tests (start, wait for /health, stop)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path
    waited_s: float


def start(store_uri: str, artifacts: Path, log: Path, port: int | None = None) -> Server:
    """Start ``mlflow server`` (one worker, no GenAI job runner) and wait until it is healthy."""
    port = port or free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
               store_uri, "--default-artifact-root", str(artifacts), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    # The GenAI job runner (7 huey consumers) is not needed here; on 2 cores it doubles
    # start-up and shutdown time.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return launch(command, env, log, f"http://127.0.0.1:{port}")


def launch(command: list[str], env: dict[str, str], log: Path, url: str) -> Server:
    """Run ``command`` (an ``mlflow server`` listening at ``url``) and wait until it is healthy."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)  # fmt: skip
    try:
        waited = _wait_healthy(url, process, log)
    except BaseException:
        stop(process)
        raise
    return Server(process, url, log, waited)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, limit_s: float = 120) -> float:
    begin = time.monotonic()
    while time.monotonic() - begin < limit_s:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited ({process.returncode}):\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return time.monotonic() - begin
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {limit_s} s:\n{log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's own process group and wait until every member has exited."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)  # raises once the whole group is gone
            time.sleep(0.3)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
