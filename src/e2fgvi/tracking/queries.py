"""Reading runs back: comparison tables, metric histories, artifact listings, UI links."""

from __future__ import annotations

from dataclasses import dataclass

from e2fgvi.tracking.client import client


@dataclass(frozen=True)
class RunRecord:
    """A run as read back for comparison tables."""

    run_id: str
    experiment: str
    run_name: str
    status: str
    start_time_ms: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


# MLflow's own default page size for runs; a test passes a small one to cross page boundaries.
PAGE_SIZE = 1000


def _all_pages(search, page_size: int) -> list:
    """Every item of a paged MLflow search, following its page tokens to the end."""
    items, token = [], None
    while True:
        page = search(max_results=page_size, page_token=token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def search_runs(
    uri: str, experiments: list[str] | None = None, page_size: int = PAGE_SIZE
) -> list[RunRecord]:
    """Every run of the named experiments (all experiments when None), newest first.

    Experiments and runs are read page by page until MLflow has no more, so nothing is cut at
    a page size.
    """
    mlflow = client(uri)
    found = _all_pages(mlflow.search_experiments, page_size)
    wanted = [e for e in found if experiments is None or e.name in experiments]
    if not wanted:
        return []
    names = {e.experiment_id: e.name for e in wanted}
    runs = _all_pages(
        lambda **page: mlflow.search_runs(
            list(names), order_by=["attributes.start_time DESC"], **page
        ),
        page_size,
    )
    return [
        RunRecord(
            run_id=r.info.run_id,
            experiment=names[r.info.experiment_id],
            run_name=r.info.run_name or "",
            status=r.info.status,
            start_time_ms=r.info.start_time or 0,
            params=dict(r.data.params),
            metrics=dict(r.data.metrics),
            tags={k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
        )
        for r in runs
    ]


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, in step order."""
    history = client(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def list_artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in client(uri).list_artifacts(run_id, path)]


def experiment_id(uri: str, name: str) -> str | None:
    """The id of the named experiment (for UI links such as ``#/experiments/<id>/runs/<run>``)."""
    experiment = client(uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment else None


def artifact_text(uri: str, run_id: str, path: str) -> str | None:
    """A text artifact of a run; None when the run has no such file."""
    folder = path.rpartition("/")[0]
    if path not in list_artifacts(uri, run_id, folder or None):
        return None
    local = client(uri).download_artifacts(run_id, path)
    with open(local, encoding="utf-8") as text:
        return text.read()
