"""One coherent record per run: the ranks' own records plus their totals (pure functions)."""

from __future__ import annotations

from e2fgvi.measure.record import CostRecord, RankRecord, Totals


def sum_or_none(values: list[float | None]) -> float | None:
    """A total only when every part was measured: a partial sum would understate the cost."""
    if not values or any(v is None for v in values):
        return None
    return float(sum(values))


def _max_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _gpu_energy(ranks: list[RankRecord]) -> tuple[float | None, list[str]]:
    """Energy of each distinct GPU once (two ranks on one GPU must not count it twice)."""
    seen: dict[str, float | None] = {}
    sources: set[str] = set()
    for rank in ranks:
        gpu = rank.gpu
        if gpu is None:
            if rank.conditions.gpu_count:
                seen[f"{rank.host}/{rank.device}"] = None  # a GPU without NVML figures
            continue
        seen.setdefault(gpu.uuid, gpu.energy_j)
        if gpu.energy_source:
            sources.add(gpu.energy_source)
    return sum_or_none(list(seen.values())) if seen else None, sorted(sources)


def _cpu_energy(ranks: list[RankRecord]) -> float | None:
    """RAPL is machine-wide: one reading per host, never one per rank."""
    per_host: dict[str, float | None] = {}
    for rank in ranks:
        per_host.setdefault(rank.host, rank.cpu.energy_j)
    return sum_or_none(list(per_host.values()))


def _memory(ranks: list[RankRecord], key: str) -> float | None:
    return _max_or_none([getattr(r.torch_memory, key) if r.torch_memory else None for r in ranks])


def _throughput(ranks: list[RankRecord]) -> float | None:
    """Clips per second: every rank's clips per step over the slowest rank's mean step time.

    The mean (not the median) so that clips/s x measured time = clips trained; the slowest
    rank, because DDP steps end together.
    """
    mean = _max_or_none([r.step_s.mean for r in ranks])
    return sum(r.clips_per_step for r in ranks) / mean if mean else None


def totals(ranks: list[RankRecord]) -> Totals:
    """Run-level figures: the slowest rank's step time, summed throughput and energy."""
    gpu_energy, sources = _gpu_energy(ranks)
    return Totals(
        ranks=len(ranks),
        gpus=sum(r.conditions.gpu_count for r in ranks),
        device_names=sorted({r.device_name for r in ranks}),
        wall_s=max(r.wall_s for r in ranks),
        steps_measured=min(r.steps.measured for r in ranks),
        steps_total=max(r.steps.total for r in ranks),
        clips_per_step=sum(r.clips_per_step for r in ranks),
        # DDP steps end together, so the slowest rank's figure is the run's.
        step_s_median=_max_or_none([r.step_s.median for r in ranks]),
        step_s_p90=_max_or_none([r.step_s.p90 for r in ranks]),
        step_s_mean=_max_or_none([r.step_s.mean for r in ranks]),
        data_wait_s_median=_max_or_none([r.data_wait_s.median for r in ranks]),
        compute_s_median=_max_or_none([r.compute_s.median for r in ranks]),
        clips_per_s=_throughput(ranks),
        flops_per_step=sum_or_none([r.flops_per_step for r in ranks]),
        gpu_energy_j=gpu_energy,
        energy_sources=sources,
        cpu_energy_j=_cpu_energy(ranks),
        peak_allocated_gb=_memory(ranks, "peak_allocated_gb"),
        peak_reserved_gb=_memory(ranks, "peak_reserved_gb"),
        gpu_total_gb=_memory(ranks, "total_gb"),
        cpu_time_s=sum(r.cpu.time_s for r in ranks),
        peak_rss_mb=max(r.cpu.peak_rss_mb for r in ranks),
        overhead_fraction=_max_or_none([r.overhead.fraction_of_step_time for r in ranks]),
        overhead_per_step_us=_max_or_none([r.overhead.per_step_us for r in ranks]),
    )


def merge_ranks(records: list[RankRecord]) -> CostRecord:
    """Rank 0's view of the session: every rank's record, ordered by rank, and the totals."""
    ranks = sorted(records, key=lambda r: r.rank)
    return CostRecord(world_size=len(ranks), totals=totals(ranks), ranks=ranks)
