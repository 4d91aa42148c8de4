"""The spool: records a stage could not send, as JSON lines after a header naming the run.

One spool per run, named after the run's key (``<run_key>.jsonl``), a client-side id that the
run also carries as its tag ``e2fgvi.run_key``. The first line is ``{"op": "run", "run_id",
"run_key", "experiment", "run_name", "uri"}`` (plus ``dropped_metric_records`` once metrics
were thinned); the rest are records in the order they were logged. Once its records are sent,
a spool keeps only its header, with the run id MLflow assigned, so later stages find the run
after an outage. A new run has a new key and therefore never picks up another run's spool.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e2fgvi.atomic import write_text

DROPPED = "dropped_metric_records"


def spool_path(folder: Path, run_key: str) -> Path:
    """The spool of the run with key ``run_key``."""
    return folder / f"{run_key}.jsonl"


def read_records(spool: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a spool file."""
    lines = [json.loads(line) for line in spool.read_text().splitlines() if line.strip()]
    return lines[0], lines[1:]


def write_records(spool: Path, header: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Replace the spool's content with ``header`` and ``records`` (atomically)."""
    lines = [json.dumps({**header, "op": "run"}), *(json.dumps(r) for r in records)]
    write_text(spool, "\n".join(lines) + "\n")


def append_records(
    spool: Path,
    header: dict[str, Any],
    records: list[dict[str, Any]],
    limit: int | None = None,
    dropped: int = 0,
) -> int:
    """Add ``records`` after what the spool holds; returns the metrics records thinned away.

    The file's header is kept (it learns the run id if it lacked it); ``dropped`` metrics
    records (thinned before) and those thinned here to stay within ``limit`` are counted in it.
    """
    if spool.exists():
        kept, earlier = read_records(spool)
        kept["run_id"] = kept.get("run_id") or header.get("run_id")
        header = kept
    else:
        earlier = []
    combined = earlier + records
    thinned = thin_metrics(combined, limit) if limit is not None else 0
    total = header.get(DROPPED, 0) + dropped + thinned
    header = {**header, DROPPED: total} if total else header
    write_records(spool, header, combined)
    return thinned


def thin_metrics(records: list[dict[str, Any]], limit: int, protect: int = 0) -> int:
    """Drop every other metrics record until at most ``limit`` are left; returns how many went.

    Never the newest metrics record, nor the first ``protect`` records (those being sent); older
    metrics get sparser each round; params, tags, artifacts and the run's end all stay.
    """
    dropped = 0
    while len(records) > limit:
        metrics = [i for i, r in enumerate(records) if i >= protect and r["op"] == "metrics"]
        doomed = set(metrics[:-1][::-1][::2])  # from the second newest backwards
        if not doomed:
            break
        records[:] = [r for i, r in enumerate(records) if i not in doomed]
        dropped += len(doomed)
    return dropped
