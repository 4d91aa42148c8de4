"""A preempted job: the real training loop with stand-in networks, SIGKILLed and resumed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

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
