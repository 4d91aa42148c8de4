"""A fake NVML module for the GPU-less CI: the one permitted fake, injected by parameter.

It mirrors the nvidia-ml-py calls the cost meter makes (same names, units and error classes);
the tests drive its readings explicitly.
"""
# ruff: noqa: N801, N802, N818 - the names must be nvidia-ml-py's own

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_NotFound(NVMLError):
    pass


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int | None = 0  # None: the GPU has no energy counter
    power_mw: int = 100_000
    util: int = 50
    mem_used: int = 2**30
    mem_total: int = 80 * 2**30
    temp: int | None = 40  # None: temperature not supported
    sm_clock: int = 1980
    calls: dict[str, int] = field(default_factory=dict)


class FakeNvml:
    """Module-like object: ``FakeNvml(gpus)`` stands in for ``import pynvml``."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(self, gpus: list[FakeGpu], init_error: Exception | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error

    def _count(self, gpu: FakeGpu, name: str) -> None:
        gpu.calls[name] = gpu.calls.get(name, 0) + 1

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if not 0 <= index < len(self.gpus):
            raise NVMLError("Invalid Argument")
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError_NotFound("Not Found")

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> bytes:
        return gpu.name.encode()  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: FakeGpu) -> int:
        self._count(gpu, "energy")
        if gpu.energy_mj is None:
            raise NVMLError_NotSupported("Not Supported")
        return gpu.energy_mj

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return gpu.power_mw

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(gpu=gpu.util, memory=gpu.util // 2)

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        free = gpu.mem_total - gpu.mem_used
        return SimpleNamespace(used=gpu.mem_used, total=gpu.mem_total, free=free)

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        self._count(gpu, "temperature")
        if gpu.temp is None:
            raise NVMLError_NotSupported("Not Supported")
        return gpu.temp

    def nvmlDeviceGetClockInfo(self, gpu: FakeGpu, clock: int) -> int:
        return gpu.sm_clock


class FakeClock:
    """A monotonic clock the test advances."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
