"""Which container engine ``e2fgvi doctor`` runs under, and whether it was given the GPUs.

``docker run --gpus all`` gives a container the GPUs through the NVIDIA Container Toolkit; podman
4.x accepts ``--gpus`` and ignores it, so there the GPUs come through CDI
(``--device nvidia.com/gpu=all`` after ``nvidia-ctk cdi generate``). A container without the GPU
device nodes was started without the flag its engine needs; the check names that flag. The engine
is told by the files it bind-mounts into every container (/etc/hostname, /etc/hosts).
"""

from __future__ import annotations

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


# Root paths of the files an engine bind-mounts over /etc/hostname, /etc/hosts and /etc/resolv.conf:
# .../docker/containers/<id>/hostname (Docker, rootless too), .../overlay-containers/<id>/userdata/
# hostname (podman). A marker file alone is not enough: some VM images keep Docker's /.dockerenv.
ENGINE_PATHS = {"docker": "/docker/containers/", "podman": "/overlay-containers/"}
ENGINE_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def engine_from_mounts(mountinfo: str) -> str:
    """docker | podman | container (another engine bind-mounted them) | "" (no container)."""
    engine = ""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in ENGINE_FILES:
            found = [name for name, part in ENGINE_PATHS.items() if part in fields[3]]
            engine = found[0] if found else engine or "container"
    return engine


def probe_container(root: Path = Path("/")) -> ContainerFacts:
    """The engine from /proc/self/mountinfo, podman's version, the /dev/nvidiaN nodes given."""
    devices = sum(1 for d in (root / "dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", d.name))
    try:
        mountinfo = (root / "proc" / "self" / "mountinfo").read_text(encoding="utf-8")
    except OSError:
        mountinfo = ""
    engine = engine_from_mounts(mountinfo)
    version = ""
    containerenv = root / "run" / ".containerenv"  # podman writes its version here (--privileged)
    if engine == "podman" and containerenv.is_file():
        text = containerenv.read_text(encoding="utf-8", errors="replace")
        found = re.search(r'^engine="podman-([^"]+)"', text, re.MULTILINE)
        version = found.group(1) if found else ""
    return ContainerFacts(engine, version, devices)


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
