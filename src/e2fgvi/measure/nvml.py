"""NVML access for exactly the job's GPUs: device mapping, sampling, energy.

The NVML module is a parameter everywhere (default: ``import pynvml`` from nvidia-ml-py), so the
tests can hand in a fake one; this machine-independent layer is the only GPU code that runs
without a GPU. Energy comes from NVML's cumulative counter (mJ since driver load) when the GPU
has one, else from integrating sampled power (trapezoid rule).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from e2fgvi.measure.record import FieldStats, GpuRecord
from e2fgvi.measure.series import Downsampled

log = logging.getLogger(__name__)

FIELDS = ("t_s", "util_pct", "mem_used_mb", "power_w", "temp_c", "sm_clock_mhz")
_MAX_WATTS = 5000.0  # far above any single GPU: separates a counter wrap from a counter reset


class NvmlUnavailableError(Exception):
    """NVML cannot measure this device; the message is one line for the record."""


def load_nvml(module: Any = None) -> Any:
    """An initialised NVML module (``pynvml`` unless one is given); NvmlUnavailableError if none."""
    if module is None:
        try:
            import pynvml as module
        except ImportError:
            raise NvmlUnavailableError("nvidia-ml-py is not installed") from None
    try:
        module.nvmlInit()
    except module.NVMLError as exc:
        raise NvmlUnavailableError(f"NVML unavailable ({exc})") from None
    return module


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_entries(env: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: None when unset (all devices)."""
    if env is None:
        return None
    entries = []
    for raw in env.split(","):
        entry = raw.strip()
        # CUDA stops at the first invalid entry; a negative index hides everything after it.
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries


def _by_uuid_prefix(nvml: Any, prefix: str) -> Any:
    matches = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        if _text(nvml.nvmlDeviceGetUUID(handle)).startswith(prefix):
            matches.append(handle)
    if len(matches) != 1:
        found = "no" if not matches else "several"
        raise NvmlUnavailableError(
            f"CUDA_VISIBLE_DEVICES entry {prefix}: {found} matching GPU in NVML"
        )
    return matches[0]


def resolve_handle(nvml: Any, local_index: int, visible: str | None, uuid: str | None = None):
    """NVML handle of CUDA device ``local_index`` under the given CUDA_VISIBLE_DEVICES.

    ``uuid`` (``GPU-…``, as torch reports it) wins when NVML knows it: CUDA's default device
    order may differ from NVML's PCI order, a UUID never does.
    """
    if uuid and uuid.startswith("GPU-"):
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except nvml.NVMLError:
            log.debug("NVML does not know %s; mapping by CUDA_VISIBLE_DEVICES", uuid)
    entries = visible_entries(visible)
    if entries is None:
        return nvml.nvmlDeviceGetHandleByIndex(local_index)
    if local_index >= len(entries):
        raise NvmlUnavailableError(
            f"cuda:{local_index} is not among CUDA_VISIBLE_DEVICES={visible!r} "
            f"({len(entries)} visible)"
        )
    entry = entries[local_index]
    if entry.startswith("MIG-"):
        raise NvmlUnavailableError(
            f"{entry} is a MIG instance: per-instance power and energy are not supported"
        )
    if entry.startswith("GPU-"):
        return _by_uuid_prefix(nvml, entry)
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    raise NvmlUnavailableError(
        f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither an index nor GPU-…"
    )


class EnergyCounter:
    """Accumulates NVML's cumulative energy counter (mJ) across wrap-around and resets."""

    def __init__(self, first_mj: int, modulus: int = 2**64) -> None:
        self.last_mj = int(first_mj)
        self.modulus = modulus
        self.total_mj = 0
        self.wraps = 0
        self.resets = 0

    def update(self, value_mj: int, max_delta_mj: float) -> bool:
        """Add the delta since the last reading; False when the delta is not usable (a reset)."""
        value_mj = int(value_mj)
        delta = value_mj - self.last_mj
        self.last_mj = value_mj
        if delta >= 0:
            self.total_mj += delta
            return True
        wrapped = delta + self.modulus
        if wrapped <= max_delta_mj:
            self.wraps += 1
            self.total_mj += wrapped
            return True
        # Counter went backwards by more than a wrap explains (driver reload): the caller
        # covers this interval from sampled power instead.
        self.resets += 1
        return False


class GpuProbe:
    """Samples one GPU; integrates power and follows the energy counter."""

    def __init__(
        self,
        nvml: Any,
        handle: Any,
        clock: Callable[[], float] = time.monotonic,
        max_points: int = 2048,
    ) -> None:
        self.nvml, self.handle, self.clock = nvml, handle, clock
        self.name = _text(nvml.nvmlDeviceGetName(handle))
        self.uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        self.timeline = Downsampled(FIELDS, max_points)
        self.unsupported: set[str] = set()
        self.latest: dict[str, float | None] = {}
        self.samples = 0
        self.power_integral_j = 0.0
        self.fallback_j = 0.0  # power integral over intervals the counter could not cover
        self.fallback_intervals = 0
        self.counter: EnergyCounter | None = None
        self.counter_error = ""
        self.maxima: dict[str, float] = {}  # exact, unlike the decimated timeline
        self._t0: float | None = None
        self._prev: tuple[float, float | None] | None = None  # (time, power W)

    def _open_counter(self) -> None:
        try:
            self.counter = EnergyCounter(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except self.nvml.NVMLError as exc:
            self.counter_error = str(exc) or type(exc).__name__
            log.info("GPU %s has no energy counter (%s): integrating power", self.name, exc)

    def _read(self, field: str, call: Callable[[], float]) -> float | None:
        if field in self.unsupported:
            return None
        try:
            return float(call())
        except self.nvml.NVMLError_NotSupported:
            self.unsupported.add(field)  # never ask again: each failing call costs time
            return None
        except self.nvml.NVMLError:
            return None

    def sample(self) -> None:
        nvml, h = self.nvml, self.handle
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
            self._open_counter()
        values = {
            "util_pct": self._read("util_pct", lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
            "mem_used_mb": self._read(
                "mem_used_mb", lambda: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
            ),
            "power_w": self._read("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
            "temp_c": self._read(
                "temp_c", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
            ),
            "sm_clock_mhz": self._read(
                "sm_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)
            ),
        }
        self._account_energy(now, values["power_w"])
        self.latest = values
        for key, value in values.items():
            if value is not None:
                self.maxima[key] = max(value, self.maxima.get(key, value))
        self.samples += 1
        self.timeline.add([now - self._t0, *values.values()])

    def _account_energy(self, now: float, power_w: float | None) -> None:
        if self._prev is None:
            self._prev = (now, power_w)
            return
        t_prev, p_prev = self._prev
        self._prev = (now, power_w)
        dt = now - t_prev
        known = [p for p in (p_prev, power_w) if p is not None]
        interval_j = sum(known) / len(known) * dt if known else 0.0
        self.power_integral_j += interval_j
        if self.counter is None:
            return
        try:
            reading = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except self.nvml.NVMLError:
            return  # the next good reading covers this interval too
        if not self.counter.update(reading, max_delta_mj=max(dt, 1.0) * _MAX_WATTS * 1000):
            self.fallback_intervals += 1
            self.fallback_j += interval_j

    @property
    def energy_source(self) -> str | None:
        if self.counter is not None:
            return "counter"
        return "power_integral" if "power_w" not in self.unsupported and self.samples else None

    @property
    def energy_j(self) -> float | None:
        if self.counter is not None:
            return self.counter.total_mj / 1000.0 + self.fallback_j
        return self.power_integral_j if self.energy_source else None

    def summary(self) -> GpuRecord:
        """This GPU's part of the record."""
        duration = self._prev[0] - self._t0 if self._prev and self._t0 is not None else 0.0
        energy = self.energy_j
        total_mb = self._read(
            "mem_total_mb", lambda: self.nvml.nvmlDeviceGetMemoryInfo(self.handle).total / 2**20
        )
        return GpuRecord(
            name=self.name,
            uuid=self.uuid,
            samples=self.samples,
            duration_s=duration,
            energy_j=energy,
            energy_source=self.energy_source,
            energy_counter_error=self.counter_error or None,
            energy_power_integral_j=self.power_integral_j if self.samples > 1 else None,
            counter_wraps=self.counter.wraps if self.counter else 0,
            counter_resets=self.counter.resets if self.counter else 0,
            fallback_intervals=self.fallback_intervals,
            mean_power_w=energy / duration if energy is not None and duration > 0 else None,
            mem_total_mb=total_mb,
            stats=_column_stats(self.timeline, self.maxima),
            unsupported=sorted(self.unsupported),
            timeline=self.timeline.to_series(),
        )


def _column_stats(series: Downsampled, maxima: dict[str, float]) -> dict[str, FieldStats]:
    """Sample mean and exact maximum of every sampled field."""
    points = series.points()
    stats = {}
    for i, field in enumerate(series.fields[1:], start=1):
        pairs = [(values[i], n) for values, n in points if not math.isnan(values[i])]
        weight = sum(n for _, n in pairs)
        stats[field] = FieldStats(
            mean=sum(v * n for v, n in pairs) / weight if weight else None,
            max=maxima.get(field),
        )
    return stats
