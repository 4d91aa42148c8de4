"""The cost meter the training loop calls: step timing, GPU/CPU sampling, one record per rank.

Conditions it states in every record: warm-up steps excluded from the step statistics, CUDA
synchronised at the end of each compute span (so GPU time lands in the step that launched it),
medians and p90 over the measured steps, the NVML sampling interval, and the meter's own
overhead (main-thread time inside meter calls plus the sampler thread's CPU time).
"""

from __future__ import annotations

import logging
import os
import time
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from e2fgvi.config import CostParams
from e2fgvi.measure import nvml as nvml_layer
from e2fgvi.measure.host import POWERCAP, host_info, open_rapl, process_usage
from e2fgvi.measure.record import (
    Conditions,
    CostRecord,
    CpuFigures,
    Overhead,
    RankRecord,
    Scalar,
    StepCounts,
    TorchMemory,
)
from e2fgvi.measure.sampling import SamplerThread
from e2fgvi.measure.series import Downsampled, describe
from e2fgvi.measure.totals import merge_ranks

log = logging.getLogger(__name__)

_said: set[str] = set()


def _say_once(message: str) -> None:
    """Missing hardware is stated once per process, in one line, without a stack trace."""
    if message not in _said:
        _said.add(message)
        log.info("%s", message)


@dataclass(frozen=True)
class StepTiming:
    """Wall time of one step, split into waiting for data and computing."""

    step: int
    data_s: float
    compute_s: float
    total_s: float
    warmup: bool


class _Span:
    """A reusable timing context; adds its duration to the meter's current step."""

    __slots__ = ("kind", "meter", "t0")

    def __init__(self, meter: CostMeter, kind: int) -> None:
        self.meter, self.kind, self.t0 = meter, kind, 0.0

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, exc_type, exc, tb) -> bool:
        meter = self.meter
        if meter.synchronise and exc_type is None and self.kind == 1:
            torch.cuda.synchronize(meter.device)
        t_end = time.perf_counter()
        meter._spans[self.kind] += t_end - self.t0
        meter.overhead_main_s += time.perf_counter() - t_end
        return False


def _rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class CostMeter:
    """Measures one rank's training cost; see the module docstring for what and how.

    Args:
        cfg: the ``cost`` params section.
        device: the device this rank computes on.
        clips_per_step: clips per step on this rank.
        nvml: an NVML module to use instead of ``pynvml`` (tests inject a fake one).
        nvml_device: local CUDA index to sample; default the compute device's own.
        visible_devices: CUDA_VISIBLE_DEVICES to map through; default the environment's.
        powercap_root: where RAPL counters live.
    """

    def __init__(
        self,
        cfg: CostParams,
        device: torch.device,
        clips_per_step: int,
        *,
        nvml: Any = None,
        nvml_device: int | None = None,
        visible_devices: str | None = None,
        powercap_root: Path = POWERCAP,
        max_points: int = 1024,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.clips_per_step = clips_per_step
        self.synchronise = self.device.type == "cuda"
        if nvml_device is None and self.device.type == "cuda":
            nvml_device = self.device.index if self.device.index is not None else 0
        self._nvml_module, self._nvml_device = nvml, nvml_device
        self._visible, self._powercap_root = visible_devices, powercap_root
        self.switches: dict[str, Scalar] = {}
        self.flops_per_step: float | None = None
        self.overhead_main_s = 0.0
        self._spans = [0.0, 0.0]
        self._data_span, self._compute_span = _Span(self, 0), _Span(self, 1)
        self._times = {"step_s": array("d"), "data_wait_s": array("d"), "compute_s": array("d")}
        self._warm: list[float] = []
        self._series = Downsampled(("step", "step_s", "data_s", "compute_s"), max_points)
        self._count = 0
        self._first_step: int | None = None
        self._last_step: int | None = None
        self._gpu: nvml_layer.GpuProbe | None = None
        self._gpu_note = ""
        self._rapl = None
        self._rapl_note = ""
        self._sampler: SamplerThread | None = None
        self._started_at = ""
        self._t_start = self._last_end = 0.0

    # -- the training loop's calls ------------------------------------------------------------

    def start(self) -> None:
        """Reset peaks, open the probes and start the sampler thread."""
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        if self.synchronise:
            torch.cuda.reset_peak_memory_stats(self.device)
        self._gpu, self._gpu_note = self._open_gpu()
        self._rapl, self._rapl_note = open_rapl(self._powercap_root)
        if self._rapl is None:
            _say_once(f"CPU energy not measured: {self._rapl_note}")
        probes = [p for p in (self._gpu, self._rapl) if p is not None]
        if probes:
            self._sampler = SamplerThread(probes, self.cfg.nvml_interval_s)
            self._sampler.start()
        self._t_start = self._last_end = time.perf_counter()

    def _open_gpu(self) -> tuple[nvml_layer.GpuProbe | None, str]:
        index, visible = self._nvml_device, self._visible
        if index is None:
            note = f"no CUDA device ({self.device.type}): GPU figures are null"
            _say_once(note)
            return None, note
        if visible is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        uuid = None
        if self.device.type == "cuda":
            # torch prints the CUDA UUID without NVML's "GPU-" prefix; MIG UUIDs will not match.
            raw = getattr(torch.cuda.get_device_properties(self.device), "uuid", None)
            uuid = f"GPU-{raw}" if raw is not None else None
        try:
            nvml = nvml_layer.load_nvml(self._nvml_module)
        except nvml_layer.NvmlUnavailableError as exc:
            return None, self._gpu_off(str(exc))
        try:
            handle = nvml_layer.resolve_handle(nvml, index, visible, uuid)
            return nvml_layer.GpuProbe(nvml, handle), "ok"
        except (nvml_layer.NvmlUnavailableError, nvml.NVMLError) as exc:
            return None, self._gpu_off(str(exc) or type(exc).__name__)

    @staticmethod
    def _gpu_off(reason: str) -> str:
        _say_once(f"GPU sampling off: {reason}; GPU power, energy and utilisation are null")
        return reason

    def data_wait(self) -> _Span:
        """Context around fetching the batch."""
        return self._data_span

    def compute(self) -> _Span:
        """Context around forward, backward and optimiser; CUDA-synchronised at exit."""
        return self._compute_span

    def end_step(self, step: int) -> StepTiming:
        """Close the step: its wall time runs from the previous ``end_step`` (or ``start``)."""
        now = time.perf_counter()
        data_s, compute_s = self._spans
        self._spans[0] = self._spans[1] = 0.0
        warmup = self._count < self.cfg.warmup_steps
        timing = StepTiming(step, data_s, compute_s, now - self._last_end, warmup)
        self._last_end = now
        self._count += 1
        if warmup:
            self._warm.append(timing.total_s)
        else:
            if self._first_step is None:
                self._first_step = step
            self._last_step = step
            self._times["step_s"].append(timing.total_s)
            self._times["data_wait_s"].append(data_s)
            self._times["compute_s"].append(compute_s)
            self._series.add((step, timing.total_s, data_s, compute_s))
        self.overhead_main_s += time.perf_counter() - now
        return timing

    def metrics_for_step(self, timing: StepTiming) -> dict[str, float]:
        """Per-step timing figures for MLflow (``cost/…``).

        ``cost/step_clips_per_s`` is one step's throughput: the global batch (every rank's
        clips) over this step's wall time; the run's ``clips_per_s`` is over all measured steps.

        Raw GPU samples (utilisation, memory, power) are not among them: MLflow's System metrics
        tab carries those (``e2fgvi.tracking.system``); the meter keeps the job's own GPU's
        energy and power statistics for the cost record.
        """
        t0 = time.perf_counter()
        metrics = {
            "cost/step_s": timing.total_s,
            "cost/data_wait_s": timing.data_s,
            "cost/compute_s": timing.compute_s,
        }
        if timing.total_s > 0:
            global_clips = self.clips_per_step * _rank()[1]
            metrics["cost/step_clips_per_s"] = global_clips / timing.total_s
        self.overhead_main_s += time.perf_counter() - t0
        return metrics

    def set_flops_per_step(self, flops: float) -> None:
        """FLOPs of one step on this rank (``measure_step_flops``); enables MFU in the report."""
        self.flops_per_step = float(flops)

    def set_conditions(self, **switches: Scalar) -> None:
        """Speed switches to keep beside the figures (amp, tf32, cudnn_benchmark, compile…)."""
        self.switches.update(switches)

    # -- the record ---------------------------------------------------------------------------

    def stop(self) -> RankRecord:
        """Stop sampling; this rank's record."""
        if self._sampler is not None:
            self._sampler.stop()
        return self.record()

    def record(self) -> RankRecord:
        """This rank's record so far, without stopping (checkpoints keep snapshots of it)."""
        wall_s = time.perf_counter() - self._t_start
        rank, world = _rank()
        times = {k: list(v) for k, v in self._times.items()}
        measured_s = sum(times["step_s"])
        n = len(times["step_s"])
        return RankRecord(
            rank=rank,
            world_size=world,
            **host_info(),
            device=str(self.device),
            device_type=self.device.type,
            device_name=self._device_name(),
            clips_per_step=self.clips_per_step,
            started_at=self._started_at,
            wall_s=wall_s,
            steps=StepCounts(
                total=self._count,
                warmup=len(self._warm),
                measured=n,
                first_measured=self._first_step,
                last_measured=self._last_step,
            ),
            **{key: describe(values) for key, values in times.items()},
            measured_time_s=measured_s,
            clips_per_s=self.clips_per_step * n / measured_s if measured_s > 0 else None,
            warmup_step_s=list(self._warm),
            series=self._series.to_series(),
            flops_per_step=self.flops_per_step,
            gpu=self._gpu.summary() if self._gpu is not None else None,
            gpu_note=self._gpu_note,
            torch_memory=self._torch_memory(),
            cpu=self._cpu_figures(),
            overhead=self._overhead(measured_s + sum(self._warm)),
            conditions=self._conditions(),
        )

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return self.device.type

    def _torch_memory(self) -> TorchMemory | None:
        if self.device.type != "cuda":
            return None
        gib = 2**30
        return TorchMemory(
            peak_allocated_gb=torch.cuda.max_memory_allocated(self.device) / gib,
            peak_reserved_gb=torch.cuda.max_memory_reserved(self.device) / gib,
            total_gb=torch.cuda.get_device_properties(self.device).total_memory / gib,
        )

    def _cpu_figures(self) -> CpuFigures:
        rapl = self._rapl
        return CpuFigures(
            **process_usage(),
            energy_j=rapl.energy_j if rapl is not None else None,
            energy_note=rapl.summary()["scope"] if rapl is not None else self._rapl_note,
        )

    def _overhead(self, stepped_s: float) -> Overhead:
        sampler_s = self._sampler.cpu_s if self._sampler is not None else 0.0
        total = self.overhead_main_s + sampler_s
        return Overhead(
            main_thread_s=self.overhead_main_s,
            sampler_cpu_s=sampler_s,
            per_step_us=1e6 * total / self._count if self._count else None,
            fraction_of_step_time=total / stepped_s if stepped_s > 0 else None,
            sampler_errors=self._sampler.errors if self._sampler is not None else 0,
        )

    def _conditions(self) -> Conditions:
        return Conditions(
            warmup_steps=self.cfg.warmup_steps,
            warmup_excluded=len(self._warm),
            synchronised=self.synchronise,
            timer="time.perf_counter"
            + ("; CUDA synchronised at the end of compute()" if self.synchronise else ""),
            device_name=self._device_name(),
            gpu_count=1 if self.device.type == "cuda" or self._gpu is not None else 0,
            nvml_interval_s=self.cfg.nvml_interval_s,
            nvml=self._gpu_note,
            statistics="median and p90 over measured (post-warm-up) steps",
            switches=dict(self.switches),
        )

    def gather(self, record: RankRecord) -> CostRecord | None:
        """Every rank's record merged into one on rank 0 (None on the other ranks).

        Under torch.distributed every rank must call it (a collective); with NCCL,
        ``torch.cuda.set_device`` first.
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return merge_ranks([record])
        records: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(records, record)
        return merge_ranks(records) if dist.get_rank() == 0 else None
