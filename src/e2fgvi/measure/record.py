"""The cost record, typed: what the meter measured on each rank, and the run's totals.

Strict, frozen models in the style of ``e2fgvi.config``, from the meter to the report. On disk
(``cost_raw.json``, and the checkpoint folder's ``cost/session_*.json`` snapshots) a record is
indented JSON a person can read, carrying its schema version under ``"schema"``; ``read_record``
refuses a file of another version, or a malformed one, in one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from e2fgvi.atomic import write_json
from e2fgvi.errors import UserError, first_problem

# Version 2: typed record; a file is always a gathered record; speed switches under
# conditions.switches. Version 1 was the untyped dict (a single rank's record or a gathered one).
SCHEMA = 2
RERUN = "rerun the train stage"

Scalar = str | bool | int | float


class FrozenModel(BaseModel):
    """Strict types, no unknown keys, immutable: the style of ``e2fgvi.config``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Stats(FrozenModel):
    """Order statistics of a sample (every figure None when it is empty)."""

    n: int
    mean: float | None
    std: float | None
    min: float | None
    p10: float | None
    median: float | None
    p90: float | None
    max: float | None


class Series(FrozenModel):
    """A decimated time series: each row is the mean of ``counts[i]`` raw rows (None: missing)."""

    fields: list[str]
    stride: int
    rows: list[list[float | None]]
    counts: list[int]

    def column(self, name: str) -> list[float | None]:
        index = self.fields.index(name)
        return [row[index] for row in self.rows]


class StepCounts(FrozenModel):
    total: int
    warmup: int
    measured: int
    first_measured: int | None
    last_measured: int | None


class FieldStats(FrozenModel):
    mean: float | None
    max: float | None


class GpuRecord(FrozenModel):
    """One GPU as NVML sampled it: energy (counter or power integral) and its timeline."""

    name: str
    uuid: str
    samples: int
    duration_s: float
    energy_j: float | None
    energy_source: str | None
    energy_counter_error: str | None
    energy_power_integral_j: float | None
    counter_wraps: int
    counter_resets: int
    fallback_intervals: int
    mean_power_w: float | None
    mem_total_mb: float | None
    stats: dict[str, FieldStats]
    unsupported: list[str]
    timeline: Series


class TorchMemory(FrozenModel):
    peak_allocated_gb: float
    peak_reserved_gb: float
    total_gb: float


class CpuFigures(FrozenModel):
    """Process CPU time, peak memory, and machine-wide CPU package energy (RAPL) when readable."""

    cpu_user_s: float
    cpu_system_s: float
    cpu_children_s: float
    peak_rss_mb: float
    peak_rss_children_mb: float
    energy_j: float | None
    energy_note: str

    @property
    def time_s(self) -> float:
        return self.cpu_user_s + self.cpu_system_s + self.cpu_children_s


class Overhead(FrozenModel):
    """The meter's own cost: main-thread time inside its calls and the sampler's CPU time."""

    main_thread_s: float
    sampler_cpu_s: float
    per_step_us: float | None
    fraction_of_step_time: float | None
    sampler_errors: int


class Conditions(FrozenModel):
    """How the figures were measured, and the speed switches they were measured under."""

    warmup_steps: int
    warmup_excluded: int
    synchronised: bool
    timer: str
    device_name: str
    gpu_count: int
    nvml_interval_s: float
    nvml: str
    statistics: str
    switches: dict[str, Scalar] = {}

    def flat(self) -> dict[str, Scalar]:
        """One mapping for the report: the measurement conditions, then the switches."""
        return {**self.model_dump(exclude={"switches"}), **self.switches}


class RankRecord(FrozenModel):
    """One rank's measurement of one session."""

    rank: int
    world_size: int
    host: str
    cpu_count: int | None
    machine: str
    python: str
    device: str
    device_type: str
    device_name: str
    clips_per_step: int
    started_at: str
    wall_s: float
    steps: StepCounts
    step_s: Stats
    data_wait_s: Stats
    compute_s: Stats
    measured_time_s: float
    clips_per_s: float | None
    warmup_step_s: list[float]
    series: Series
    flops_per_step: float | None
    gpu: GpuRecord | None
    gpu_note: str
    torch_memory: TorchMemory | None
    cpu: CpuFigures
    overhead: Overhead
    conditions: Conditions


class Totals(FrozenModel):
    """Run-level figures of one session over all its ranks (see ``e2fgvi.measure.totals``)."""

    ranks: int
    gpus: int
    device_names: list[str]
    wall_s: float
    steps_measured: int
    steps_total: int
    clips_per_step: int
    step_s_median: float | None
    step_s_p90: float | None
    step_s_mean: float | None
    data_wait_s_median: float | None
    compute_s_median: float | None
    clips_per_s: float | None
    flops_per_step: float | None
    gpu_energy_j: float | None
    energy_sources: list[str]
    cpu_energy_j: float | None
    peak_allocated_gb: float | None
    peak_reserved_gb: float | None
    gpu_total_gb: float | None
    cpu_time_s: float
    peak_rss_mb: float
    overhead_fraction: float | None
    overhead_per_step_us: float | None


class CostRecord(FrozenModel):
    """A session's record as rank 0 gathers it: every rank's record and their totals."""

    schema_version: int = Field(SCHEMA, alias="schema")
    kind: Literal["gathered"] = "gathered"
    world_size: int
    totals: Totals
    ranks: list[RankRecord]
    # Filled in cost_raw.json only: a resumed experiment's cost counts every earlier session.
    previous_sessions: list[Totals] = []


def write_record(path: Path, record: CostRecord) -> None:
    """Atomically, as key-sorted indented JSON (readable, stable diffs)."""
    write_json(path, record.model_dump(mode="json", by_alias=True))


def read_record(path: Path, remedy: str = RERUN) -> CostRecord:
    """A record file of this schema; anything else is one line naming the file and ``remedy``."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; {remedy}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); {remedy}") from None
    version = raw.get("schema") if isinstance(raw, dict) else None
    if version is None:
        raise UserError(f"{path}: not a cost record (no 'schema'); {remedy}")
    if version != SCHEMA:
        raise UserError(
            f"{path}: cost record of schema {version!r}, this code reads schema {SCHEMA}; {remedy}"
        )
    try:
        return CostRecord.model_validate_json(text)
    except ValidationError as exc:
        raise UserError(f"{path}: {first_problem(exc, 'record')}; {remedy}") from None
