"""The tolerance file of ``e2fgvi verify``: one rule per group of metrics, first match wins.

A metric is named ``FILE:KEY`` as ``dvc metrics diff`` reports it (nested keys joined by dots,
e.g. ``reports/eval/metrics.json:psnr``); a rule's ``match`` is a glob over that name. Each rule
says how the rerun's value is judged against the committed one: ``exact``, ``abs`` (absolute
difference), ``rel`` (difference relative to the committed value), ``positive`` (only a sanity
check: a finite number above 0, for figures that depend on the machine's speed) or ``skip``
(not compared, with the reason). A metric no rule matches is compared exactly.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from e2fgvi.errors import UserError, first_problem

_KINDS = ("exact", "abs", "rel", "positive", "skip")


class Rule(BaseModel):
    """How the metrics whose ``FILE:KEY`` matches ``match`` are judged (exactly one kind)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str
    exact: bool | None = None
    abs: float | None = Field(default=None, ge=0)
    rel: float | None = Field(default=None, ge=0)
    positive: bool | None = None
    skip: str | None = None
    why: str = ""  # the measurement or reasoning behind the value (shown in docs, not judged)

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        kinds = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(_KINDS)} (got {kinds or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) not in (None, False))

    def describe(self) -> str:
        """The tolerance column of the verdict table."""
        if self.abs is not None:
            return f"±{self.abs:g}"
        if self.rel is not None:
            return f"±{self.rel:.2%}".replace(".00%", "%")
        return {"exact": "exact", "positive": "> 0", "skip": "skip"}[self.kind]


EXACT = Rule(match="*", exact=True)  # for metrics no rule matches


class Tolerances(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule]

    def rule_for(self, metric: str) -> Rule:
        """The first rule whose glob matches ``metric`` (``FILE:KEY``); exact when none does."""
        return next((r for r in self.rules if fnmatch.fnmatchcase(metric, r.match)), EXACT)


def load_tolerances(path: Path) -> Tolerances:
    """Read and validate the tolerance file; every problem is one line naming it."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: tolerance file not found (pass --tolerances FILE)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    try:
        return Tolerances.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{path}: {first_problem(exc, 'top level')}") from None
