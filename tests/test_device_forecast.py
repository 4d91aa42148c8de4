"""`e2fgvi forecast`: the device table, the counted step, roofline and calibration, the CLI.

The step is counted on fake tensors for a tiny configuration (E2FGVI-HQ 108x60, 2+1 frames);
its matmul FLOPs must equal what torch's FLOP counter counts on the real step, and the memory
band must hold the resident-memory growth of the real step measured in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

from e2fgvi.config import load_params
from e2fgvi.cost import forecast_devices
from e2fgvi.cost.device_forecast import memory_band
from e2fgvi.cost.device_table import load_table, shipped_table
from e2fgvi.cost.opcount import OpCost, StepCost, count_step
from e2fgvi.cost.roofline import OperatorTimes, calibrated_step, roofline_step
from e2fgvi.errors import UserError
from e2fgvi.measure.flops import measure_step_flops
from e2fgvi.train.profiling import make_training_step

KINDS = ("V100", "1080 Ti", "A100 40GB", "A100 80GB", "H100", "H200", "L4", "L40S", "RTX 4090")


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(num_local_frames=2, num_ref_frames=1, batch_size=2, nproc_per_node=2)
    path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def tiny_cost(tiny_plan):
    return count_step(load_params(tiny_plan), 1)


def test_shipped_table_has_every_kind_with_its_source():
    table = shipped_table()
    assert set(KINDS) <= set(table.kinds)
    for kind in table.kinds.values():
        assert kind.source and kind.peak_flops("fp32") and kind.memory_gb and kind.board_power_w
    assert table.lookup("NVIDIA A100-SXM4-40GB") == "A100 40GB"
    assert table.lookup("NVIDIA A100-SXM4-80GB") == "A100 80GB"
    assert table.lookup("NVIDIA H100 80GB HBM3") == "H100"
    assert table.lookup("NVIDIA GeForce GTX 1080 Ti") == "1080 Ti"
    assert table.lookup("cpu") is None
    assert table.kind("V100").peak_flops("bf16") is None  # no native bf16 on Volta


KIND = {
    "match": ["X1"],
    "peak_tflops": {"fp32": 10.0},
    "bandwidth_gb_s": 500,
    "memory_gb": 16,
    "board_power_w": 200,
    "interconnect_gb_s": 32,
    "source": "made up",
}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"bandwidth_gb_s": -1}, "kinds.X1.bandwidth_gb_s"),
        ({"peak_tflops": {"fp32": 1.0, "fp8": 2.0}}, "unknown precision 'fp8'"),
        ({"peak_tflops": {"bf16": 1.0}}, "needs at least fp32"),
        ({"source": ""}, "kinds.X1.source"),
        ({"colour": "red"}, "kinds.X1.colour"),
    ],
)
def test_bad_table_entry_is_one_line_naming_file_and_key(tmp_path, change, key):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"kinds": {"X1": {**KIND, **change}}}))
    with pytest.raises(UserError) as caught:
        load_table(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)) and key in message


def test_user_table_adds_a_kind_and_bad_files_are_refused(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"kinds": {"X1": KIND}}))
    table = load_table(path)
    assert table.lookup("Vendor X1 card") == "X1" and "H100" in table.kinds
    path.write_text("kinds: [1, 2")
    with pytest.raises(UserError, match="not valid YAML"):
        load_table(path)
    path.write_text(yaml.safe_dump({"kinds": {}, "prices": {}}))
    with pytest.raises(UserError, match="unknown key 'prices'"):
        load_table(path)


def _op(flops, nbytes, matmul=True, name="mm"):
    return OpCost(name=name, matmul=matmul, dtype="float32", flops=flops, bytes=nbytes, count=1)


@pytest.fixture
def synthetic_cost():
    """A step of two operators, 0.5 GiB resident, 1.5 GiB at its peak (for the CLI's shape)."""
    ops = [_op(3e11, 2e9), _op(1e8, 5e9, matmul=False, name="add")]
    return StepCost(
        clips_per_device=1, ops=ops, flops=3.001e11, bytes=7e9, op_count=2,
        peak_live_bytes=1.5 * 2**30, resident_bytes=0.5 * 2**30, grad_bytes=0.2 * 2**30,
    )  # fmt: skip


def test_roofline_and_habitat_scaling():
    table = shipped_table()
    roof = table.roofline.model_copy(update={"op_overhead_us": 0.0})
    v100, h100 = table.kind("V100"), table.kind("H100")
    compute = _op(1e12, 1e6)  # compute-bound everywhere
    memory = _op(1e6, 1e10, matmul=False, name="add")
    assert roofline_step([compute], v100, roof, False) == pytest.approx(1e12 / 15.7e12 / 0.5)
    assert roofline_step([memory], v100, roof, False) == pytest.approx(1e10 / 900e9 / 0.7)
    assert roofline_step([compute], h100, roof, True) < roofline_step([compute], h100, roof, False)
    measured = OperatorTimes(
        device_name="Tesla V100", kind="V100", clips_per_device=1, step_s=3.5,
        op_s={"mm": 1.0, "add": 2.0},
    )  # fmt: skip
    ops = [compute, memory]
    assert calibrated_step(ops, measured, v100, v100, roof, False) == pytest.approx(3.5)
    scaled = calibrated_step(ops, measured, v100, h100, roof, False)
    assert scaled == pytest.approx(1.0 * 15.7 / 67.0 + 2.0 * 900 / 3350 + 0.5)


@pytest.mark.slow
def test_counted_step_matches_torch_flops_and_memory_band_holds_real_growth(tiny_plan, tiny_cost):
    params = load_params(tiny_plan)
    counted = sum(o.flops * o.count for o in tiny_cost.ops if o.matmul)
    assert counted == measure_step_flops(
        make_training_step(params, __import__("torch").device("cpu"), 1)
    )
    assert tiny_cost.resident_bytes < tiny_cost.peak_live_bytes
    assert tiny_cost.scaled(2).flops == pytest.approx(2 * tiny_cost.flops)
    code = (
        "import gc, resource, sys, torch\n"
        "from e2fgvi.config import load_params\n"
        "from e2fgvi.train.profiling import make_training_step\n"
        "torch.set_num_threads(1)\n"
        "step = make_training_step(load_params(sys.argv[1]), torch.device('cpu'), 1)\n"
        "gc.collect()\n"
        "base = int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "step(); step()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_plan)], capture_output=True, text=True, check=True
    )
    grown = int(done.stdout.split()[-1]) / 2**30
    table = shipped_table()
    band = memory_band(tiny_cost, table)
    fixed = tiny_cost.resident_bytes / 2**30 + table.memory.context_gb  # resident before the step
    assert band.low - fixed <= grown <= band.high - fixed, (grown, band)


def _run(capsys, plan, *extra):
    args = argparse.Namespace(
        plan=plan, params=ROOT / "params.yaml", target="V100,H100,L4", devices="1,2",
        device_table=None, mlruns=None, no_calibrate=True, not_from=None, json=False,
    )  # fmt: skip
    for key, value in extra:
        setattr(args, key, value)
    assert forecast_devices.run(args) == 0
    return capsys.readouterr().out


def test_cli_json_rows_and_derived_labels(capsys, tiny_plan, synthetic_cost, monkeypatch):
    monkeypatch.setattr(forecast_devices, "count_step", lambda params, clips: synthetic_cost)
    rows = json.loads(_run(capsys, tiny_plan, ("json", True)))
    assert {r["fits"] for r in rows} == {"yes"}  # 2 GiB at most: fits every kind
    assert [(r["target"], r["devices"]) for r in rows] == [
        (k, n) for k in ("V100", "H100", "L4") for n in (1, 2)
    ]
    for row in rows:
        assert {"target", "devices", "step_s", "wall_days", "device_hours", "kwh", "money", "fits",
                "basis"} <= set(row)  # fmt: skip
        assert row["derived"] is True and row["basis"].startswith("roofline")
        assert row["step_s_band"][0] < row["step_s"] < row["step_s_band"][1]
        assert row["fits"] in ("yes", "no", "uncertain")
    h100 = next(r for r in rows if r["target"] == "H100" and r["devices"] == 1)
    v100 = next(r for r in rows if r["target"] == "V100" and r["devices"] == 1)
    assert h100["step_s"] < v100["step_s"]
    text = _run(capsys, tiny_plan)
    body = [line for line in text.splitlines() if line.startswith("| ") and " × " in line][1:]
    assert len(body) == 6 and all("derived" in line for line in body)


def test_cli_refuses_unknown_kind_and_uneven_split(capsys, tiny_plan, synthetic_cost, monkeypatch):
    monkeypatch.setattr(forecast_devices, "count_step", lambda params, clips: synthetic_cost)
    with pytest.raises(UserError, match="unknown device kind 'B200'"):
        _run(capsys, tiny_plan, ("target", "B200"))
    with pytest.raises(UserError, match="--devices 3 does not split"):
        _run(capsys, tiny_plan, ("devices", "3"))


def _store_profile(mlruns, step: dict, device="NVIDIA H100 80GB HBM3") -> str:
    from e2fgvi import tracking

    logger = tracking.RunLogger(
        uri=tracking.tracking_uri(mlruns), experiment="plans", run_name="profile-gpu",
        artifact_root=mlruns,
    )  # fmt: skip
    path = mlruns.parent / "operator_times.json"
    times = {"device_name": device, "kind": "H100", "clips_per_device": 1, "step_s": 0.5}
    path.write_text(json.dumps({**times, "op_s": {"mm": 0.3, "add": 0.1}, "step": step}))
    logger.log_artifact(path, "cost")
    logger.end()
    logger.close()
    return tracking.search_runs(tracking.tracking_uri(mlruns))[0].run_id


def test_calibration_from_a_gpu_profile_run_in_the_store(
    capsys, tmp_path, tiny_plan, synthetic_cost, monkeypatch
):
    from e2fgvi.cost.plan import load_plan

    monkeypatch.setattr(forecast_devices, "count_step", lambda params, clips: synthetic_cost)
    mlruns = tmp_path / "mlruns"
    step = load_plan(tiny_plan)[1].step.model_dump()
    run_id = _store_profile(mlruns, step)
    common = [("json", True), ("mlruns", mlruns), ("no_calibrate", False), ("devices", "1")]
    rows = json.loads(_run(capsys, tiny_plan, *common, ("target", "H100,V100")))
    assert all(r["basis"].startswith("calibrated") and run_id in r["basis"] for r in rows)
    # H100 from an H100 profile: the measured step (0.3 + 0.1 by operator, 0.1 unaccounted),
    # at the plan's 2 clips per device.
    assert rows[0]["step_s"] == pytest.approx(2 * 0.5)
    assert rows[1]["step_s"] > rows[0]["step_s"]  # the V100 is slower on both terms
    rows = json.loads(_run(capsys, tiny_plan, *common, ("not_from", "H100")))
    assert all(r["basis"].startswith("roofline") for r in rows)
    _store_profile(tmp_path / "other", {**step, "width": 432}, "Tesla V100-SXM2-32GB")
    other = [c for c in common if c[0] != "mlruns"] + [("mlruns", tmp_path / "other")]
    rows = json.loads(_run(capsys, tiny_plan, *other))  # another step's profile: not used
    assert all(r["basis"].startswith("roofline") for r in rows)
