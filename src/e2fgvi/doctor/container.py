"""Which container engine ``e2fgvi doctor`` runs under, and whether it was given the GPUs.

``docker run --gpus all`` gives a container the GPUs through the NVIDIA Container Toolkit; podman
4.x accepts ``--gpus`` and ignores it, so there the GPUs come through CDI
(``--device nvidia.com/gpu=all`` after ``nvidia-ctk cdi generate``). A container without the GPU
device nodes was started without the flag its engine needs; the check names that flag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from e2fgvi.doctor.checks import Check, ok, warn

CDI_SETUP = "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
GPU_FLAG = {
    "docker": "docker run --gpus all (needs the NVIDIA Container Toolkit on the host)",
    "podman": (
        "podman ignores --gpus all: give the GPUs through CDI, podman run "
        f"--device nvidia.com/gpu=all (once per host: {CDI_SETUP})"
    ),
    "container": "Docker: --gpus all; podman: --device nvidia.com/gpu=all (CDI)",
}


@dataclass(frozen=True)
class ContainerFacts:
    engine: str  # docker | podman | container (one whose engine is unknown) | "" (none)
    version: str = ""  # podman's, from /run/.containerenv; "" when unknown
    gpu_devices: int = 0  # /dev/nvidia<N> device nodes given to this container


def probe_container(root: Path = Path("/")) -> ContainerFacts:
    """Podman writes /run/.containerenv, Docker /.dockerenv; both set up /dev/nvidiaN for GPUs."""
    devices = sum(1 for d in (root / "dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", d.name))
    podman = root / "run" / ".containerenv"
    if podman.is_file():
        text = podman.read_text(encoding="utf-8", errors="replace")
        found = re.search(r'^engine="podman-([^"]+)"', text, re.MULTILINE)
        return ContainerFacts("podman", found.group(1) if found else "", devices)
    if (root / ".dockerenv").exists():
        return ContainerFacts("docker", "", devices)
    # systemd's container interface: the variable is lower-case by definition.
    if os.environ.get("container"):  # noqa: SIM112
        return ContainerFacts("container", "", devices)
    return ContainerFacts("", "", devices)


def check_container(facts: ContainerFacts, gpus_visible: int) -> list[Check]:
    """Nothing outside a container; inside, the GPUs it was given or the flag that was missing."""
    if not facts.engine:
        return []
    engine = f"{facts.engine} {facts.version}".strip()
    if facts.gpu_devices or gpus_visible:
        given = max(facts.gpu_devices, gpus_visible)
        return [ok("container", f"{engine}, {given} GPU(s) given to this container")]
    return [
        warn(
            "container",
            f"{engine}, started without GPUs (no /dev/nvidia<N> device here)",
            GPU_FLAG[facts.engine],
        )
    ]
