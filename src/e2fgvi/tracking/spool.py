"""The spool: records a stage could not send, as JSON lines after a header naming the run.

The first line is ``{"op": "run", "run_id", "experiment", "run_name"}``; the rest are records
in the order they were logged. A stage that replays a spool writes ``<spool>.run_id`` (the
marker) so later stages find the run after the spool itself is gone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e2fgvi.atomic import write_text


def append_records(spool: Path, header: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Add ``records`` to ``spool``; the header is written only when the file is new.

    Appending keeps what an earlier stage spooled for the same run, in order.
    """
    lines = [json.dumps(r) for r in records]
    if not spool.exists():
        lines.insert(0, json.dumps({"op": "run", **header}))
    previous = spool.read_text() if spool.exists() else ""
    write_text(spool, previous + "\n".join(lines) + "\n")


def read_records(spool: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a spool file."""
    lines = [json.loads(line) for line in spool.read_text().splitlines() if line.strip()]
    return lines[0], lines[1:]


def marker_path(spool: Path) -> Path:
    """Where the id of a replayed spool's run is kept."""
    return spool.with_name(spool.name + ".run_id")
