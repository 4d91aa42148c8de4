"""Model FLOPs utilisation: counted FLOPs per second over the devices' dense peak.

The peaks come from the device table (``e2fgvi/cost/devices.yaml``), looked up by device name
and by the precision the matmuls ran in.
"""

from __future__ import annotations

from e2fgvi.config import precision_of  # noqa: F401 (cost code imports it here)
from e2fgvi.cost.device_table import shipped_table
from e2fgvi.measure.record import RankRecord, Totals


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """Dense peak FLOP/s of a device name by the table's match substrings; None if unknown."""
    return shipped_table().peak_flops(device_name, precision)


def mfu(totals: Totals, ranks: list[RankRecord], precision: str) -> float | None:
    """Achieved FLOP/s over the devices' summed dense peak; None when any peak is unknown."""
    peaks = [peak_flops(r.device_name, precision) for r in ranks]
    step_s = totals.step_s_mean
    if not step_s or not peaks or any(p is None for p in peaks) or totals.flops_per_step is None:
        return None
    return totals.flops_per_step / (step_s * sum(peaks))
