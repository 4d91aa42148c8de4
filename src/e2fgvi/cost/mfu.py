"""Model FLOPs utilisation: counted FLOPs per second over the devices' dense peak.

The peaks are params (``cost.peak_tflops``), looked up by device name and by the precision the
matmuls ran in.
"""

from __future__ import annotations

from collections.abc import Mapping

from e2fgvi.config import CostParams, precision_of  # noqa: F401 (cost code imports it here)
from e2fgvi.measure.record import RankRecord, Totals


def peak_flops(
    table: Mapping[str, Mapping[str, float]], device_name: str | None, precision: str
) -> float | None:
    """Dense peak FLOP/s for a device name by substring (longest key wins); None if unknown."""
    if not device_name:
        return None
    matches = [key for key in table if key.lower() in device_name.lower()]
    if not matches:
        return None
    entry = table[max(matches, key=len)]
    tflops = entry.get(precision)
    return tflops * 1e12 if tflops else None


def mfu(totals: Totals, ranks: list[RankRecord], cfg: CostParams, precision: str) -> float | None:
    """Achieved FLOP/s over the devices' summed dense peak; None when any peak is unknown."""
    peaks = [peak_flops(cfg.peak_tflops, r.device_name, precision) for r in ranks]
    step_s = totals.step_s_mean
    if not step_s or not peaks or any(p is None for p in peaks) or totals.flops_per_step is None:
        return None
    return totals.flops_per_step / (step_s * sum(peaks))
