"""A verdict per metric from ``dvc metrics diff --json --all`` output and the tolerance rules.

DVC's JSON maps each metrics file to ``{key: {"old": committed, "new": rerun, "diff": ...}}``;
``old`` is null for a metric the committed results lack, ``new`` for one the rerun lacks.
Both count as failures (unless a ``skip`` rule covers them): a missing metric was not
reproduced, and a new one means the committed results were not made by this code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from e2fgvi.verify.tolerances import Rule, Tolerances

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class Row:
    metric: str  # FILE:KEY
    committed: Any
    now: Any
    diff: float | None  # |now - committed| for two numbers
    tolerance: str
    verdict: str
    note: str = ""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def judge(metric: str, old: Any, new: Any, rule: Rule) -> Row:
    """One metric's row: committed ``old`` against rerun ``new`` under ``rule``."""
    diff = abs(new - old) if _number(old) and _number(new) else None

    def row(verdict: str, note: str = "") -> Row:
        return Row(metric, old, new, diff, rule.describe(), verdict, note)

    if rule.skip is not None:
        return row(SKIP, rule.skip)
    if old is None and new is None:
        return row(FAIL, "in neither result")
    if old is None:
        return row(FAIL, "new: not in the committed results (regenerate and commit them)")
    if new is None:
        return row(FAIL, "missing from the rerun")
    if rule.positive:
        good = _number(new) and math.isfinite(new) and new > 0
        return row(PASS if good else FAIL, "" if good else "not a finite number > 0")
    if diff is None or rule.exact:
        return row(PASS if old == new else FAIL)
    limit = rule.abs if rule.abs is not None else rule.rel * abs(old)
    return row(PASS if diff <= limit else FAIL)


def judge_all(diff_json: dict[str, dict[str, dict[str, Any]]], tolerances: Tolerances) -> list[Row]:
    """Every metric of the diff, sorted by file then key."""
    rows = []
    for path in sorted(diff_json):
        for key in sorted(diff_json[path]):
            entry = diff_json[path][key]
            metric = f"{path}:{key}"
            rows.append(
                judge(metric, entry.get("old"), entry.get("new"), tolerances.rule_for(metric))
            )
    return rows


def passed(rows: list[Row]) -> bool:
    return bool(rows) and all(r.verdict != FAIL for r in rows)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if _number(value) and not float(value).is_integer():
        return f"{value:.6g}"
    return str(value)


def render(rows: list[Row], show_skipped: bool = False) -> str:
    """The verdict table (metric / committed / now / |diff| / tolerance / verdict) + a summary."""
    shown = [r for r in rows if show_skipped or r.verdict != SKIP]
    head = ("metric", "committed", "now", "|diff|", "tolerance", "verdict")
    cells = [head] + [
        (r.metric, _cell(r.committed), _cell(r.now), _cell(r.diff), r.tolerance,
         f"{r.verdict} {r.note}".strip())
        for r in shown
    ]  # fmt: skip
    widths = [min(max(len(c[i]) for c in cells), 60) for i in range(len(head) - 1)]
    lines = ["  ".join(c[i].ljust(w) for i, w in enumerate(widths)) + "  " + c[-1] for c in cells]
    counts = {v: sum(r.verdict == v for r in rows) for v in (PASS, FAIL, SKIP)}
    hidden = "" if show_skipped else " (skipped rows hidden; --all shows them)"
    lines.append(
        f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped{hidden}: "
        + ("REPRODUCED" if passed(rows) else "NOT REPRODUCED")
    )
    return "\n".join(lines) + "\n"
