"""A preempted job: the real training loop with stand-in networks, SIGKILLed and resumed."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import pytest

from e2fgvi.tracking import client, system

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_a_job_killed_at_random_points_ends_like_an_uninterrupted_one(tmp_path, monkeypatch):
    """Same logged values (history and MLflow) and ONE MLflow run after 3 SIGKILLs + resumes."""
    monkeypatch.setenv("STANDIN_STEP_S", "0.02")  # slow enough for a kill to land mid-run
    monkeypatch.syspath_prepend(str(BENCH))
    long_run = importlib.import_module("long_run")
    result = long_run.preempt(tmp_path, 120, 3, seed=1, cadence=(5, 40, 10))
    assert result == {
        "kills": 3,
        "identical_history": True,
        "runs": 1,
        "identical_mlflow": True,
        "points": 24,
    }


@pytest.mark.parametrize("importer", ["client", "monitor"])
def test_every_thread_imports_mlflow_under_one_lock(tmp_path, importer):
    """The sender thread's client and the main thread's system metrics import mlflow at once at
    a run's start; unserialised, mlflow's circular imports failed one of them (ImportError)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client.client(uri)  # mlflow imported: without the lock the call below returns at once
    calls = {
        "client": lambda: client.client(uri),
        "monitor": lambda: system._mlflow_monitor(uri, None),
    }
    done = threading.Event()
    worker = threading.Thread(target=lambda: (calls[importer](), done.set()), daemon=True)
    with client.MLFLOW_IMPORT:
        worker.start()
        assert not done.wait(1.0)  # waits for the lock
    assert done.wait(60)
