"""Whether this CPU runs bf16 natively: its instruction-set flags and the caps in force.

bf16 autocast on a CPU without bf16 instructions (no ``avx512_bf16`` / ``amx_bf16``, e.g. an
AVX2 EPYC) emulates every bf16 convolution and matmul: on such a CPU our E2FGVI step with
``train.amp: bf16`` was measured several times slower than fp32 (docs/speed.md). The same holds
where the instruction set is capped below AVX-512 (``ATEN_CPU_CAPABILITY=avx2|default``, or
``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16``), which is how other CPUs are emulated here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Instructions that compute in bf16 (Intel Cooper Lake+/Sapphire Rapids AMX, AMD Zen 4+).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ATEN_CPU_CAPABILITY values that keep torch's kernels below AVX-512 (bf16 ops then convert).
ATEN_BELOW_AVX512 = ("DEFAULT", "AVX2")
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that exclude its bf16 kernels.
ONEDNN_NO_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


@dataclass(frozen=True)
class Bf16Support:
    """Native bf16 here or not, and the facts that decided it (one line)."""

    native: bool
    detail: str


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first processor's ``flags`` from /proc/cpuinfo (empty where it cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" where absent)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "unknown CPU"
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def cpu_bf16(flags: set[str] | None = None, env: Mapping[str, str] | None = None) -> Bf16Support:
    """Whether bf16 autocast runs natively on this CPU (defaults: this machine's facts)."""
    flags = cpu_flags() if flags is None else flags
    env = os.environ if env is None else env
    capability = env.get("ATEN_CPU_CAPABILITY", "").upper()
    have = sorted(set(BF16_FLAGS) & flags)
    if not have:
        if not flags:
            return Bf16Support(False, "CPU flags unreadable (/proc/cpuinfo): bf16 support unknown")
        return Bf16Support(False, f"this CPU has no bf16 instructions ({'/'.join(BF16_FLAGS)})")
    if capability in ATEN_BELOW_AVX512:
        return Bf16Support(
            False, f"{'/'.join(have)} present, but ATEN_CPU_CAPABILITY={capability.lower()}"
        )
    isa = env.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa in ONEDNN_NO_BF16:
        return Bf16Support(False, f"{'/'.join(have)} present, but ONEDNN_MAX_CPU_ISA={isa}")
    return Bf16Support(True, f"native bf16 ({'/'.join(have)})")


def slow_bf16(amp: str, device_type: str, bf16: Bf16Support | None = None) -> str:
    """A warning where ``amp`` is bf16 on a CPU without native bf16 ("" otherwise)."""
    if amp != "bf16" or device_type != "cpu":
        return ""
    bf16 = bf16 or cpu_bf16()
    if bf16.native:
        return ""
    return (
        f"bf16 autocast on this CPU will be slow: {bf16.detail}; emulated bf16 was measured "
        "several times slower than fp32 (docs/speed.md): use train.amp fp32 here"
    )
