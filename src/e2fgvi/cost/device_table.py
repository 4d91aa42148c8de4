"""The device table: datasheet peaks, bandwidth, memory and power per device kind (a data file).

The shipped table is ``devices.yaml`` beside this module; a user's file with the same layout
adds kinds or replaces kinds of the same name. Every problem is one line naming the file and
the key. The table is also where MFU finds its peaks (by device-name substring).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from e2fgvi.errors import UserError, first_problem

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceKind(_Strict):
    """One device kind's datasheet figures."""

    match: list[str] = Field(min_length=1)
    peak_tflops: dict[str, float]
    bandwidth_gb_s: float = Field(gt=0)
    memory_gb: float = Field(gt=0)
    board_power_w: float = Field(gt=0)
    interconnect_gb_s: float = Field(gt=0)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _peaks(self) -> DeviceKind:
        for precision, tflops in self.peak_tflops.items():
            if precision not in PRECISIONS:
                raise ValueError(
                    f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})"
                )
            if tflops <= 0:
                raise ValueError(f"peak {precision} must be > 0 (got {tflops})")
        if "fp32" not in self.peak_tflops:
            raise ValueError("peak_tflops needs at least fp32")
        return self

    def peak_flops(self, precision: str) -> float | None:
        """Dense peak FLOP/s at ``precision``; None where the kind cannot run it natively."""
        tflops = self.peak_tflops.get(precision)
        return tflops * 1e12 if tflops else None


class Roofline(_Strict):
    compute_efficiency: float = Field(gt=0, le=1)
    memory_efficiency: float = Field(gt=0, le=1)
    op_overhead_us: float = Field(ge=0)
    band: tuple[float, float]


class Calibrated(_Strict):
    band: tuple[float, float]


class MemoryModel(_Strict):
    context_gb: float = Field(ge=0)
    fragmentation: float = Field(ge=0)
    band: tuple[float, float]


class PowerModel(_Strict):
    fraction: tuple[float, float, float]


class DeviceTable(_Strict):
    """Device kinds and the stated assumptions that turn them into forecasts."""

    kinds: dict[str, DeviceKind]
    roofline: Roofline
    calibrated: Calibrated
    memory: MemoryModel
    power: PowerModel

    def kind(self, name: str) -> DeviceKind:
        """The kind called ``name`` exactly; a one-line error listing the known kinds."""
        if name not in self.kinds:
            raise UserError(
                f"unknown device kind {name!r}: known are {', '.join(self.kinds)} "
                "(add it to a table passed with --device-table)"
            )
        return self.kinds[name]

    def lookup(self, device_name: str | None) -> str | None:
        """The kind whose ``match`` substring is in a reported device name (longest wins)."""
        if not device_name:
            return None
        hits = [
            (len(m), name)
            for name, kind in self.kinds.items()
            for m in kind.match
            if m.lower() in device_name.lower()
        ]
        return max(hits)[1] if hits else None

    def peak_flops(self, device_name: str | None, precision: str) -> float | None:
        """Dense peak FLOP/s of a reported device name at ``precision`` (MFU); None if unknown."""
        name = self.lookup(device_name)
        return self.kinds[name].peak_flops(precision) if name else None


def parse_table(raw: object, source: str) -> DeviceTable:
    """Validate a parsed table; ``source`` names the file in the one-line error."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping with 'kinds' at the top level")
    try:
        return DeviceTable.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{source}: {first_problem(exc, 'kinds')}") from None


def _read(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{source}: not valid YAML{where}") from None


@functools.cache
def shipped_table() -> DeviceTable:
    """The table shipped with the package."""
    text = resources.files("e2fgvi.cost").joinpath("devices.yaml").read_text(encoding="utf-8")
    return parse_table(_read(text, "e2fgvi/cost/devices.yaml"), "e2fgvi/cost/devices.yaml")


def load_table(extra: Path | None = None) -> DeviceTable:
    """The shipped table, extended (or kinds replaced) by a user's file when given."""
    table = shipped_table()
    if extra is None:
        return table
    try:
        text = extra.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{extra}: cannot read the device table ({exc.strerror})") from None
    raw = _read(text, str(extra))
    if not isinstance(raw, dict) or not isinstance(raw.get("kinds", {}), dict):
        raise UserError(f"{extra}: expected a mapping with 'kinds' at the top level")
    merged = table.model_dump()
    merged["kinds"] |= raw.get("kinds") or {}
    for section in ("roofline", "calibrated", "memory", "power"):
        if section in raw:
            merged[section] = raw[section]
    unknown = set(raw) - set(merged)
    if unknown:
        raise UserError(f"{extra}: unknown key '{sorted(unknown)[0]}' (kinds, roofline, …)")
    return parse_table(merged, str(extra))
