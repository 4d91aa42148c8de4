"""Golden losses: a few deterministic CPU iterations of the train stage against committed numbers.

This is the proof that a refactor changed no behaviour: the real train stage command (as dvc.yaml
runs it) trains the real E2FGVI-HQ on the embedded sample for a few iterations, and every logged
loss must equal the committed value. On one machine the run is bit-identical; across CPUs the
float kernels (instruction set, thread count) may round differently, so the comparison allows a
relative 1e-3 (absolute 1e-6 for the tiny adversarial term). A behaviour change moves these
losses by far more: a different mask, frame or update order changes them in the first digits.

Regenerate, only for an intended change of the training numerics:
``E2FGVI_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, write_params

GOLDEN = ROOT / "tests" / "data" / "golden_losses.json"
ITERATIONS = 4
OVERRIDES = {
    "train__num_local_frames": 2,
    "train__num_ref_frames": 1,
    "train__iterations": ITERATIONS,
    "train__log_every": 1,
    "train__image_every": 1000,
    "train__checkpoint_every": 2,
    "train__deterministic": True,
    "cost__warmup_steps": 1,
    "tracking__experiment": "golden",
    "tracking__retry_interval_s": 0.0,
}
KEYS = (
    "loss/generator",
    "loss/hole",
    "loss/valid",
    "loss/flow",
    "loss/adversarial",
    "loss/discriminator",
    "grad_norm/generator",
    "grad_norm/discriminator",
)


def _train(folder: Path, data: Path) -> list[dict[str, str]]:
    write_params(folder, **OVERRIDES)
    command = [sys.executable, "-m", "e2fgvi.stages.train", "--data", str(data),
               "--spynet", "spynet.pth", "--checkpoints", "run/checkpoints",
               "--generator", "run/generator.pth", "--cost-record", "run/cost_raw.json",
               "--run-record", "run/mlflow_run.json", "--params-used", "run/params_used.json",
               "--mlruns", "mlruns", "--metrics", "train.json",
               "--plots", "train_loss.csv"]  # fmt: skip
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PATH": path}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with (folder / "train_loss.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_stage_losses_equal_the_committed_golden_numbers(tmp_path, sample_dataset):
    rows = _train(tmp_path, sample_dataset)
    measured = {row["step"]: {key: float(row[key]) for key in KEYS} for row in rows}
    if os.environ.get("E2FGVI_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(measured, key=int) == [str(i) for i in range(1, ITERATIONS + 1)]
    assert set(measured) == set(golden)
    for step, values in golden.items():
        for key, value in values.items():
            assert measured[step][key] == pytest.approx(value, rel=1e-3, abs=1e-6), (step, key)
