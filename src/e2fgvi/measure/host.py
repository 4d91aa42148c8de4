"""Host-side figures: CPU package energy (RAPL), process CPU time and peak memory."""

from __future__ import annotations

import logging
import os
import platform
import resource
import socket
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")  # the kernel's interface, not a project path


class RaplUnavailableError(Exception):
    """RAPL cannot be read here; the message is one line for the record."""


class _Domain:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = (path / "name").read_text().strip() if (path / "name").exists() else path.name
        range_file = path / "max_energy_range_uj"
        self.range_uj = int(range_file.read_text()) if range_file.exists() else 2**32
        self.last_uj = self.read()
        self.total_uj = 0

    def read(self) -> int:
        return int((self.path / "energy_uj").read_text())

    def update(self) -> None:
        value = self.read()
        delta = value - self.last_uj
        # The counter wraps at max_energy_range_uj, often within an hour at full load,
        # which is why RAPL is polled by the sampler thread rather than read twice.
        self.total_uj += delta if delta >= 0 else delta + self.range_uj
        self.last_uj = value


class RaplProbe:
    """Machine-wide CPU package energy from RAPL powercap counters (all processes, not ours)."""

    def __init__(self, root: Path = POWERCAP) -> None:
        packages = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not packages:
            raise RaplUnavailableError(f"no RAPL package domains under {root}")
        try:
            self.domains = [_Domain(p) for p in packages]
        except (OSError, ValueError) as exc:
            # Since 2020 kernels make energy_uj root-only (CVE-2020-8694); containers rarely map it.
            raise RaplUnavailableError(f"RAPL not readable ({type(exc).__name__}: {exc})") from None

    def sample(self) -> None:
        for domain in self.domains:
            domain.update()

    @property
    def energy_j(self) -> float:
        return sum(d.total_uj for d in self.domains) / 1e6

    def summary(self) -> dict[str, Any]:
        return {
            "energy_j": self.energy_j,
            "domains": [d.name for d in self.domains],
            "scope": "machine-wide CPU packages (RAPL); DRAM not included",
        }


def open_rapl(root: Path = POWERCAP) -> tuple[RaplProbe | None, str]:
    """A RAPL probe, or None with the reason CPU energy is not measured."""
    try:
        return RaplProbe(root), "ok"
    except RaplUnavailableError as exc:
        return None, str(exc)


def process_usage() -> dict[str, float]:
    """CPU seconds of this process (and its finished children) and peak resident memory."""
    times = psutil.Process().cpu_times()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "cpu_user_s": times.user,
        "cpu_system_s": times.system,
        # Children count once waited for: DataLoader workers that ended with the loader.
        "cpu_children_s": times.children_user + times.children_system,
        "peak_rss_mb": own / 1024.0,  # ru_maxrss is in KiB on Linux
        "peak_rss_children_mb": children / 1024.0,
    }


def host_info() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
