"""Step time of counted operators on a device kind: a roofline, or scaled from a measured profile.

Roofline: each operator takes the longer of its FLOPs at the kind's dense peak (at the dtype it
ran in) times the stated compute efficiency and its bytes at the datasheet bandwidth times the
stated memory efficiency, plus a fixed overhead per operator.

Calibrated (Habitat, USENIX ATC '21): measured per-operator times of one step on a source
device are split over that name's counted operators in proportion to their roofline times on
the source, then each part is scaled to the target by the ratio of peak FLOP/s when the
operator is compute-bound on the source, else by the ratio of bandwidths. Measured time that no
operator accounts for (host work, synchronisation) is carried over unscaled; counted operators
the profile did not see take their roofline time on the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from e2fgvi.cost.device_table import DeviceKind, Roofline
from e2fgvi.cost.opcount import OpCost
from e2fgvi.measure.record import FrozenModel

_DTYPE_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}


class OperatorTimes(FrozenModel):
    """One step's measured time per operator name on one device (a profile's artifact)."""

    device_name: str
    kind: str
    clips_per_device: int
    step_s: float  # the profiled step, wall
    op_s: dict[str, float]


def op_precision(op: OpCost, tf32: bool) -> str:
    """The peak an operator runs at: its dtype's, fp32 matmuls at tf32 when enabled."""
    if op.dtype in _DTYPE_PRECISION:
        return _DTYPE_PRECISION[op.dtype] if op.matmul else "fp32"
    return "tf32" if tf32 and op.matmul else "fp32"


def _peak(kind: DeviceKind, precision: str) -> float:
    # A precision the kind lacks natively (bf16 on a V100) runs no faster than fp32.
    return kind.peak_flops(precision) or kind.peak_flops("fp32")


def op_terms(op: OpCost, kind: DeviceKind, roof: Roofline, tf32: bool) -> tuple[float, float]:
    """(compute seconds, memory seconds) of one run of ``op`` on ``kind``."""
    compute = op.flops / (_peak(kind, op_precision(op, tf32)) * roof.compute_efficiency)
    memory = op.bytes / (kind.bandwidth_gb_s * 1e9 * roof.memory_efficiency)
    return compute, memory


def op_time(op: OpCost, kind: DeviceKind, roof: Roofline, tf32: bool) -> float:
    """Roofline seconds of one run of ``op`` on ``kind``, overhead included."""
    return max(op_terms(op, kind, roof, tf32)) + roof.op_overhead_us * 1e-6


def roofline_step(ops: Iterable[OpCost], kind: DeviceKind, roof: Roofline, tf32: bool) -> float:
    """Roofline seconds of one step of ``ops`` on ``kind``."""
    return sum(op.count * op_time(op, kind, roof, tf32) for op in ops)


def unsupported(ops: Iterable[OpCost], kind: DeviceKind, tf32: bool) -> list[str]:
    """Precisions the step runs in that ``kind`` has no peak for (they run at fp32's)."""
    wanted = {op_precision(op, tf32) for op in ops if op.matmul}
    return sorted(p for p in wanted if kind.peak_flops(p) is None)


def _scale(op: OpCost, source: DeviceKind, target: DeviceKind, roof: Roofline, tf32: bool) -> float:
    compute, memory = op_terms(op, source, roof, tf32)
    precision = op_precision(op, tf32)
    if compute >= memory:
        return _peak(source, precision) / _peak(target, precision)
    return source.bandwidth_gb_s / target.bandwidth_gb_s


def calibrated_step(
    ops: list[OpCost],
    measured: OperatorTimes,
    source: DeviceKind,
    target: DeviceKind,
    roof: Roofline,
    tf32: bool,
) -> float:
    """Seconds of one step on ``target``, scaled from ``measured`` on ``source`` (Habitat)."""
    by_name: dict[str, list[OpCost]] = {}
    for op in ops:
        by_name.setdefault(op.name, []).append(op)
    total = 0.0
    for name, group in by_name.items():
        if name not in measured.op_s:
            total += roofline_step(group, target, roof, tf32)
            continue
        weights = [op.count * op_time(op, source, roof, tf32) for op in group]
        whole = sum(weights) or 1.0
        total += sum(
            measured.op_s[name] * w / whole * _scale(op, source, target, roof, tf32)
            for op, w in zip(group, weights, strict=True)
        )
    counted = sum(s for n, s in measured.op_s.items() if n in by_name)
    return total + max(0.0, measured.step_s - counted)


def ops_by_name(times: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    """The measured times of the counted operator names only."""
    wanted = set(names)
    return {n: s for n, s in times.items() if n in wanted}
