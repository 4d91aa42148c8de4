"""DVC metrics files hold flat numbers only: what ``dvc metrics show`` / ``dvc exp show`` list.

A stage writes its figures through ``flat_numbers`` into the metrics file, and its whole report
(labels, notes, nested groups) into a plain output beside it, so experiment tables show figures,
not prose.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

Number = int | float


def flat_numbers(
    report: Mapping[str, Any], skip: Collection[str] = (), prefix: str = ""
) -> dict[str, Number | None]:
    """The numbers of a nested mapping under ``_``-joined keys; strings, lists, booleans dropped.

    Mappings under a key in ``skip`` (e.g. counts keyed by data values) are left out too.
    ``None`` (a figure not measured) is kept: DVC shows nothing for it, the file still says so.
    """
    flat: dict[str, Number | None] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if key not in skip:
                flat |= flat_numbers(value, skip, f"{name}_")
        elif value is None or (isinstance(value, Number) and not isinstance(value, bool)):
            flat[name] = value
    return flat
