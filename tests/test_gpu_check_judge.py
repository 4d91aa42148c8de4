"""benchmarks/gpu_check_judge.py judges recorded outputs of gpu_check.sh: good ones pass, each
bad one fails with the check named; a part that produced nothing fails unless it was skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

GOOD = {
    "gpu.json": {"name": "NVIDIA H100 80GB HBM3", "memory_total_gib": 79.2, "power_limit_w": 700},
    "energy.json": {"counter_j": 10250.0, "integral_j": 10010.0, "max_power_w": 690.0},
    "profile/report.json": {
        "measurements": [
            {
                "step": {"precision": "fp32"},
                "memory": {
                    "probed": [
                        {"clips": 1, "fits": True, "peak_reserved_gb": 9.1},
                        {"clips": 2, "fits": True, "peak_reserved_gb": 17.5},
                        {"clips": 4, "fits": True, "peak_reserved_gb": 34.0},
                        {"clips": 8, "fits": False, "peak_reserved_gb": 78.9},
                    ]
                },
            }
        ]
    },
    "profile/profile.json": {"step_time_median_s": 0.30},
    "losses.json": {"fp32": [1.20, 1.10, 1.05], "bf16": [1.21, 1.11, 1.04]},
    "psnr.json": {"cuda": 31.25, "cpu": 31.27},
    "ddp.json": {"ranks": 2, "losses": [1.2, 1.1, 1.0], "checksum": 5000.0},
    "single.json": {"ranks": 1, "losses": [1.2, 1.1, 1.0], "checksum": 5000.2},
    "forecast_roofline.json": [
        {"target": "H100", "step_s": 0.19, "step_s_band": [0.094, 0.378], "basis": "roofline: x"}
    ],
    "forecast_calibrated.json": [
        {"target": "H100", "step_s": 0.28, "step_s_band": [0.21, 0.37], "basis": "calibrated: y"}
    ],
}

# Each bad recording: (file, a change that must fail, the check that must name it).
BAD = [
    ("energy.json", {"counter_j": 12000.0}, "energy counter"),
    ("energy.json", {"max_power_w": 760.0}, "power limit"),
    ("losses.json", {"bf16": [1.2, 1.3, 1.05]}, "bf16 losses"),
    ("psnr.json", {"cuda": 30.9}, "eval psnr"),
    ("single.json", {"checksum": 5100.0}, "ddp = single"),
    (
        "forecast_roofline.json",
        [{**GOOD["forecast_roofline.json"][0], "step_s_band": [0.1, 0.2]}],
        "forecast roofline",
    ),
]


def _record(folder: Path, files: dict, skipped: str = "") -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data))
    (folder / "skipped.txt").write_text(skipped)
    return folder


def _judge(folder: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check_judge.py"), str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout


def _verdicts(stdout: str) -> dict[str, str]:
    lines = [line for line in stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]
    return {line[6:26].strip(): line[:4] for line in lines}


def test_good_recording_passes_every_check(tmp_path):
    code, out = _judge(_record(tmp_path, GOOD))
    assert code == 0, out
    assert set(_verdicts(out).values()) == {"PASS"} and len(_verdicts(out)) == 8
    assert "verdict: PASS" in out and "error -36.7 %" in out  # the forecast's error is printed


@pytest.mark.parametrize(("name", "change", "check"), BAD, ids=[b[2] for b in BAD])
def test_bad_recording_fails_naming_the_check(tmp_path, name, change, check):
    files = dict(GOOD)
    files[name] = change if isinstance(change, list) else {**GOOD[name], **change}
    code, out = _judge(_record(tmp_path, files))
    assert code == 1
    verdicts = _verdicts(out)
    assert verdicts[check] == "FAIL", out
    assert [c for c, v in verdicts.items() if v == "FAIL"] == [check]
    assert f"verdict: FAIL ({check})" in out


def test_memory_probe_not_monotonic_or_over_the_card_fails(tmp_path):
    files = json.loads(json.dumps(GOOD))
    probed = files["profile/report.json"]["measurements"][0]["memory"]["probed"]
    probed[2]["peak_reserved_gb"] = 12.0  # 4 clips below 2 clips' peak
    code, out = _judge(_record(tmp_path / "a", files))
    assert code == 1 and "not monotonic" in out
    probed[2]["peak_reserved_gb"] = 80.5  # over the card's 79.2 GiB
    code, out = _judge(_record(tmp_path / "b", files))
    assert code == 1 and "> card" in out


def test_missing_output_fails_unless_the_part_was_skipped(tmp_path):
    files = {k: v for k, v in GOOD.items() if k not in ("ddp.json", "single.json")}
    code, out = _judge(_record(tmp_path / "a", files))
    assert code == 1 and _verdicts(out)["ddp = single"] == "FAIL" and "no output ddp.json" in out
    code, out = _judge(_record(tmp_path / "b", files, "ddp: needs 2 GPUs, 1 visible\n"))
    assert code == 0 and _verdicts(out)["ddp = single"] == "SKIP", out


def test_gpu_check_script_says_what_is_true_of_the_project():
    text = (BENCH / "gpu_check.sh").read_text()
    for word in ("issue ", "phase", "was lent"):
        assert word not in text.lower()
    assert "gpu_check_judge.py" in text
