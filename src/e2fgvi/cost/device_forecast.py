"""What a plan costs on device kinds you do not have: one derived row per kind and device count.

A row's step time is the counted step (``e2fgvi.cost.opcount``) at the row's clips per device,
on the kind's datasheet (``e2fgvi.cost.roofline``), either as a roofline or scaled from a
measured GPU profile; DDP adds a ring all-reduce of the gradients over the kind's interconnect
(``2 (n-1)/n`` x gradient bytes; the band's low end assumes it fully overlapped). Wall time,
device-hours, energy (board power x a stated fraction) and money (params' price per
device-hour of the kind, plus energy x ``cost.price_per_kwh``) follow from it. Memory per device
is the counted live bytes at the step's peak with the table's stated overheads.
"""

from __future__ import annotations

from e2fgvi.config import CostParams
from e2fgvi.cost.device_table import DeviceTable
from e2fgvi.cost.forecast import Band, Schedule
from e2fgvi.cost.opcount import StepCost
from e2fgvi.cost.roofline import OperatorTimes, calibrated_step, roofline_step, unsupported
from e2fgvi.errors import UserError
from e2fgvi.measure.record import FrozenModel


class Calibration(FrozenModel):
    """A measured GPU profile to scale from: its run, kind and per-operator times."""

    run_id: str
    kind: str
    times: OperatorTimes


class DeviceRow(FrozenModel):
    """One device kind and count: every figure derived, each with its band."""

    target: str
    devices: int
    clips_per_device: int
    step_s: Band
    wall_days: Band
    device_hours: Band
    kwh: Band
    money: Band | None
    currency: str
    memory_gb: Band
    device_memory_gb: float
    fits: str  # yes | no | uncertain (the band straddles the device's memory)
    basis: str
    derived: bool = True
    notes: list[str]


def _band(mean: float, factors: tuple[float, float]) -> Band:
    return Band(mean=mean, low=mean * factors[0], high=mean * factors[1])


def allreduce_s(cost: StepCost, table: DeviceTable, target: str, devices: int) -> float:
    """Seconds of one ring all-reduce of the step's gradients over the kind's interconnect."""
    if devices == 1:
        return 0.0
    link = table.kind(target).interconnect_gb_s * 1e9
    return 2 * (devices - 1) / devices * cost.grad_bytes / link


def compute_s(
    cost: StepCost, table: DeviceTable, target: str, tf32: bool, calibration: Calibration | None
) -> tuple[float, str, tuple[float, float]]:
    """The step's compute seconds on ``target``, its basis and band factors."""
    kind = table.kind(target)
    if calibration is None:
        roof = table.roofline
        basis = (
            f"roofline: datasheet peaks x {roof.compute_efficiency:g} (compute), bandwidth x "
            f"{roof.memory_efficiency:g} (memory), {roof.op_overhead_us:g} us per operator"
        )
        return roofline_step(cost.ops, kind, roof, tf32), basis, roof.band
    source = table.kind(calibration.kind)
    scale = cost.clips_per_device / calibration.times.clips_per_device
    seconds = scale * calibrated_step(
        cost.scaled(calibration.times.clips_per_device).ops,
        calibration.times,
        source,
        kind,
        table.roofline,
        tf32,
    )
    basis = (
        f"calibrated: per-operator times of profile run {calibration.run_id} on "
        f"{calibration.times.device_name} scaled by peak FLOP/s (compute-bound) or bandwidth"
    )
    return seconds, basis, table.calibrated.band


def memory_band(cost: StepCost, table: DeviceTable) -> Band:
    """Memory one device needs (GiB): resident + activations x overheads + context."""
    m = table.memory
    activations = (cost.peak_live_bytes - cost.resident_bytes) * (1 + m.fragmentation)
    fixed = cost.resident_bytes / 2**30 + m.context_gb
    return Band(
        mean=fixed + activations / 2**30,
        low=fixed + activations * m.band[0] / 2**30,
        high=fixed + activations * m.band[1] / 2**30,
    )


def _fits(memory: Band, capacity: float) -> str:
    if memory.high <= capacity:
        return "yes"
    return "no" if memory.low > capacity else "uncertain"


def device_row(
    base: StepCost,
    table: DeviceTable,
    cfg: CostParams,
    schedule: Schedule,
    target: str,
    tf32: bool,
    calibration: Calibration | None = None,
) -> DeviceRow:
    """The plan's schedule on ``schedule.devices`` devices of ``target``."""
    kind = table.kind(target)
    clips = schedule.clips_per_device
    cost = base.scaled(clips)
    compute, basis, factors = compute_s(cost, table, target, tf32, calibration)
    comm = allreduce_s(cost, table, target, schedule.devices)
    step = Band(mean=compute + comm, low=compute * factors[0], high=(compute + comm) * factors[1])
    hours = step.scaled(schedule.iterations * schedule.devices / 3600)
    low, mean, high = (f * kind.board_power_w / 1000 for f in table.power.fraction)
    kwh = Band(mean=hours.mean * mean, low=hours.low * low, high=hours.high * high)
    price = cfg.price_per_device_hour.get(target)
    notes = [
        f"{p} has no peak on {target}: runs at its fp32 rate"
        for p in unsupported(cost.ops, kind, tf32)
    ]
    if price is None:
        notes.append(f"no cost.price_per_device_hour entry for {target!r}: money not computed")
    money = hours.scaled(price).plus(kwh.scaled(cfg.price_per_kwh)) if price is not None else None
    if schedule.devices > 1:
        notes.append(
            f"{target} x {schedule.devices}: DDP all-reduce {comm:.3g} s per step over "
            f"{kind.interconnect_gb_s:g} GB/s, not overlapped (the band's low end: overlapped)"
        )
    memory = memory_band(cost, table)
    return DeviceRow(
        target=target,
        devices=schedule.devices,
        clips_per_device=clips,
        step_s=step,
        wall_days=step.scaled(schedule.iterations / 86400),
        device_hours=hours,
        kwh=kwh,
        money=money,
        currency=cfg.currency,
        memory_gb=memory,
        device_memory_gb=kind.memory_gb,
        fits=_fits(memory, kind.memory_gb),
        basis=f"{basis}; band x{factors[0]:g}..x{factors[1]:g}",
        notes=notes,
    )


def device_rows(
    base: StepCost,
    table: DeviceTable,
    cfg: CostParams,
    schedule: Schedule,
    targets: list[str],
    counts: list[int],
    tf32: bool,
    calibration: Calibration | None = None,
) -> list[DeviceRow]:
    """A row per target kind and device count; counts that do not split the batch refused."""
    rows = []
    for target in targets:
        for n in counts:
            fleet = schedule.model_copy(update={"devices": n})
            if schedule.global_batch % n:
                raise UserError(
                    f"--devices {n} does not split the plan's global batch "
                    f"{schedule.global_batch} (train.batch_size); choose divisors of it"
                )
            rows.append(device_row(base, table, cfg, fleet, target, tf32, calibration))
    return rows
