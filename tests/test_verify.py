"""``e2fgvi verify``: tolerance rules, the verdict per metric, and the command on a real DVC repo.

The verdicts are judged on synthetic ``dvc metrics diff --json --all`` output (pass, fail, a
missing and a new metric); the command itself runs ``dvc exp run --temp`` and ``dvc metrics
diff`` for real on a two-second pipeline. The sample pipeline's rerun is in
``test_verify_pipeline.py`` (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from e2fgvi import cli
from e2fgvi.config import flatten
from e2fgvi.errors import UserError
from e2fgvi.train.session import loss_means
from e2fgvi.verify.tolerances import Rule, Tolerances, load_tolerances
from e2fgvi.verify.verdict import FAIL, PASS, SKIP, judge, judge_all, passed, render

RULES = Tolerances(
    rules=[
        Rule(match="reports/train.json:loss_adversarial", abs=0.001),
        Rule(match="reports/train.json:loss_*", rel=0.05),
        Rule(match="reports/train.json:step_time*", positive=True),
        Rule(match="reports/eval/metrics.json:psnr", abs=0.05),
        Rule(match="reports/profile.json:*", skip="written per machine"),
    ]
)


def _diff(**entries: tuple[object, object]) -> dict:
    """DVC's diff JSON from ``file__key=(old, new)`` (``__`` for the colon, ``_`` kept)."""
    out: dict[str, dict] = {}
    for name, (old, new) in entries.items():
        path, key = name.split("__")
        path = {"train": "reports/train.json", "eval": "reports/eval/metrics.json",
                "profile": "reports/profile.json", "data": "reports/data.json"}[path]  # fmt: skip
        entry = {"old": old, "new": new}
        if isinstance(old, float) and isinstance(new, float):
            entry["diff"] = new - old
        out.setdefault(path, {})[key] = entry
    return out


def _verdicts(rows) -> dict[str, str]:
    return {r.metric.split(":")[1]: r.verdict for r in rows}


def test_a_rerun_within_every_tolerance_passes():
    diff = _diff(train__loss_generator=(4.266, 4.207), train__loss_adversarial=(-0.0019, -0.0011),
                 train__step_time_median_s=(2.28, 9.7), eval__psnr=(22.741, 22.745),
                 data__frames=(408, 408),
                 profile__step_s=(None, 3.1))  # fmt: skip
    rows = judge_all(diff, RULES)
    assert _verdicts(rows) == {"loss_generator": PASS, "loss_adversarial": PASS,
                               "step_time_median_s": PASS, "psnr": PASS, "frames": PASS,
                               "step_s": SKIP}  # fmt: skip
    assert passed(rows)
    psnr = next(r for r in rows if r.metric.endswith(":psnr"))
    assert psnr.diff == pytest.approx(0.004) and psnr.tolerance == "±0.05"


def test_a_value_beyond_its_tolerance_fails_and_only_that_one():
    diff = _diff(train__loss_generator=(4.266, 4.6), eval__psnr=(22.741, 22.80),
                 data__frames=(408, 407))  # fmt: skip
    rows = judge_all(diff, RULES)
    assert _verdicts(rows) == {"loss_generator": FAIL, "psnr": FAIL, "frames": FAIL}
    assert not passed(rows)
    ok = judge_all(_diff(train__loss_generator=(4.266, 4.47)), RULES)  # 4.8 % < 5 %
    assert passed(ok)


def test_a_missing_metric_fails():
    rows = judge_all(_diff(eval__psnr=(22.74, 22.74), eval__ssim=(0.83, None)), RULES)
    ssim = next(r for r in rows if r.metric.endswith(":ssim"))
    assert ssim.verdict == FAIL and "missing" in ssim.note and not passed(rows)


def test_a_new_metric_fails_unless_a_skip_rule_covers_it():
    rows = judge_all(_diff(eval__vfid=(None, 12.5), profile__wall_h=(None, 1.0)), RULES)
    assert _verdicts(rows) == {"vfid": FAIL, "wall_h": SKIP}
    assert "not in the committed results" in rows[0].note


def test_positive_is_a_sanity_check_not_a_comparison():
    rule = Rule(match="*", positive=True)
    assert judge("m", 2.0, 300.0, rule).verdict == PASS
    assert judge("m", 2.0, 0.0, rule).verdict == FAIL
    assert judge("m", 2.0, float("nan"), rule).verdict == FAIL


def test_strings_and_booleans_compare_exactly_under_any_rule():
    rule = Rule(match="*", abs=1.0)
    assert judge("m", "108x60", "108x60", rule).verdict == PASS
    assert judge("m", "108x60", "216x120", rule).verdict == FAIL
    assert judge("m", True, False, rule).verdict == FAIL  # not 1 vs 0 within 1.0


def test_an_unmatched_metric_is_compared_exactly():
    assert RULES.rule_for("reports/cost/cost.json:x").exact
    assert judge("m", 1.0, 1.0 + 1e-12, RULES.rule_for("m")).verdict == FAIL


def test_relative_tolerance_is_relative_to_the_committed_value():
    rule = Rule(match="*", rel=0.01)
    assert judge("m", -2.0, -2.019, rule).verdict == PASS
    assert judge("m", -2.0, -2.021, rule).verdict == FAIL


def test_the_table_lists_each_metric_and_a_verdict_line():
    rows = judge_all(_diff(eval__psnr=(22.741, 22.9), profile__x=(None, 1.0)), RULES)
    text = render(rows)
    header, psnr, summary = text.splitlines()
    assert header.split() == ["metric", "committed", "now", "|diff|", "tolerance", "verdict"]
    assert psnr.split() == ["reports/eval/metrics.json:psnr", "22.741", "22.9", "0.159", "±0.05",
                            "FAIL"]  # fmt: skip
    assert summary.startswith("0 passed, 1 failed, 1 skipped") and "NOT REPRODUCED" in summary
    assert "profile.json" in render(rows, show_skipped=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("rules: [{match: '*', abs: 0.1, rel: 0.1}]", "rules.0: Value error, give exactly one"),
     ("rules: [{match: '*'}]", "give exactly one of exact, abs, rel, positive, skip"),
     ("rules: [{match: '*', abs: -1}]", "rules.0.abs"),
     ("rules: [{match: '*', tol: 1}]", "rules.0.tol: Extra inputs"),
     ("rules: [", "not valid YAML at line 1"),
     ("- match: '*'", "top level: Input should be a valid dictionary"),
     ("rules: [{abs: 0.1}]", "rules.0.match: Field required")],
)  # fmt: skip
def test_a_bad_tolerance_file_is_one_line_naming_it(tmp_path, text, expected):
    path = tmp_path / "verify.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=expected) as info:
        load_tolerances(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_tolerance_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(UserError, match=r"nowhere\.yaml: tolerance file not found"):
        load_tolerances(path)


def _committed_metrics() -> dict[str, dict[str, object]]:
    """The committed metrics flattened as DVC does (nested keys dotted; lists and nulls out)."""

    def flat(node: dict, prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in node.items():
            if isinstance(value, dict):
                out |= flat(value, f"{prefix}{key}.")
            elif value is not None and not isinstance(value, list):
                out[f"{prefix}{key}"] = value
        return out

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    files = [next(iter(m)) for s in stages.values() for m in s.get("metrics", [])]
    files = [f.replace("${reports}", "reports") for f in files]
    return {f: flat(json.loads((ROOT / f).read_text())) for f in files if (ROOT / f).exists()}


def test_the_committed_tolerances_pass_the_committed_metrics_against_themselves():
    tolerances = load_tolerances(ROOT / "verify.yaml")
    metrics = _committed_metrics()
    assert {"reports/train.json", "reports/eval/metrics.json", "reports/data.json"} <= set(metrics)
    diff = {f: {k: {"old": v, "new": v} for k, v in m.items()} for f, m in metrics.items()}
    rows = judge_all(diff, tolerances)
    assert passed(rows), render([r for r in rows if r.verdict == FAIL])
    kinds = {r.metric: tolerances.rule_for(r.metric).kind for r in rows}
    assert kinds["reports/eval/metrics.json:psnr"] == "abs"
    assert tolerances.rule_for("reports/train.json:loss_mean.generator").kind == "rel"
    assert tolerances.rule_for("reports/train.json:loss_generator").kind == "skip"
    assert kinds["reports/data.json:train_frames"] == "exact"
    assert kinds["reports/train.json:step_time_median_s"] in {"positive", "skip"}


def test_the_committed_tolerances_catch_a_real_change():
    """Twice the learning rate over the sample's 40 iterations, and half a dB, must fail."""
    tolerances = load_tolerances(ROOT / "verify.yaml")
    assert judge("reports/eval/metrics.json:psnr", 22.741, 23.241,
                 tolerances.rule_for("reports/eval/metrics.json:psnr")).verdict == FAIL  # fmt: skip
    assert tolerances.rule_for("reports/data.json:train_bytes_out").exact


def test_the_committed_tolerances_pass_what_an_avx2_cpu_reported():
    """A 2-core AMD EPYC with AVX2 and no AVX-512 (a fresh clone's make repro) reported these."""
    tolerances = load_tolerances(ROOT / "verify.yaml")
    diff = _diff(train__loss_discriminator_real=(0.7818670272827148, 0.8257),
                 eval__psnr=(22.745281010664975, 22.7417),
                 eval__ssim=(0.8299675229497389, 0.83010))  # fmt: skip
    rows = judge_all(diff, tolerances)
    assert passed(rows) and _verdicts(rows)["loss_discriminator_real"] == SKIP


def test_the_committed_tolerances_pass_every_machine_the_spread_benchmark_measured():
    """benchmarks/verify_spread.py's committed runs (the pipeline on emulated machines) pass."""
    spread = json.loads((ROOT / "benchmarks/results/verify_spread/spread.json").read_text())
    tolerances = load_tolerances(ROOT / "verify.yaml")
    reports = ROOT / "reports"
    committed = {
        f"reports/{name}": json.loads((reports / name).read_text())
        for name in ("train.json", "eval/metrics.json")
    }
    assert len(spread["machines"]) >= 4
    for name, machine in spread["machines"].items():
        now = {"reports/train.json": flatten(machine["train"]),
               "reports/eval/metrics.json": flatten(machine["eval"])}  # fmt: skip
        diff = {
            path: {
                key: {"old": old, "new": now[path][key]}
                for key, old in flatten(values).items()
                if key in now[path] and old is not None  # null: not computed (VFID), as DVC shows
            }
            for path, values in committed.items()
        }
        rows = judge_all(diff, tolerances)
        failed = [r.metric for r in rows if r.verdict == FAIL]
        assert not failed, f"{name} ({machine['what']}): {failed}"
        assert any(r.metric.endswith("loss_mean.discriminator_real") for r in rows)


def test_loss_means_average_the_last_quarter_of_the_iterations():
    rows = [{"step": str(s), "loss/generator": str(float(s)), "lr/generator": "1e-4"}
            for s in range(1, 41)]  # fmt: skip
    rows[-1]["loss/flow"] = "nan"
    means = loss_means(rows, 40)
    assert means == {"from_step": 31, "generator": sum(range(31, 41)) / 10, "flow": None}
    assert loss_means(rows[:3], 3)["from_step"] == 3  # at least the last iteration


# -- the command on a real (tiny) DVC repository -----------------------------------------------

GEN = """import json, yaml
x = yaml.safe_load(open("params.yaml"))["x"]
json.dump({"loss": 1.0 + x, "frames": 3, "size": "108x60"}, open("metrics.json", "w"))
"""


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    """A git + DVC repo whose one stage writes metrics.json from params.yaml, committed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "gen.py").write_text(GEN)
    (repo / "params.yaml").write_text("x: 0.25\n")
    stage = {"cmd": f"{sys.executable} gen.py", "deps": ["gen.py"], "params": ["x"],
             "metrics": [{"metrics.json": {"cache": False}}]}  # fmt: skip
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gen": stage}}))
    (repo / "verify.yaml").write_text("rules: [{match: 'metrics.json:loss', abs: 0.01}]\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for command in ([*git, "init", "-q"], [*dvc, "init", "-q"], [*dvc, "repro", "-q"],
                    [*git, "add", "-A"], [*git, "commit", "-qm", "results"]):  # fmt: skip
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
    return repo


def test_verify_reruns_as_an_experiment_and_passes_without_touching_the_workspace(
    tiny_repo, monkeypatch, capsys
):
    monkeypatch.chdir(tiny_repo)
    before = (tiny_repo / "metrics.json").read_bytes()
    assert cli.main(["verify", "--name", "check1"]) == 0
    out = capsys.readouterr().out
    assert "HEAD (committed) vs check1 (now)" in out and "REPRODUCED" in out
    assert "metrics.json:loss" in out and "metrics.json:size" in out
    assert (tiny_repo / "metrics.json").read_bytes() == before
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"],
                           cwd=tiny_repo, capture_output=True, text=True)  # fmt: skip
    assert "check1" in shown.stdout


def test_verify_fails_with_status_1_when_the_committed_metrics_are_off(
    tiny_repo, monkeypatch, capsys
):
    """Commit a loss the code does not produce; the workspace (the code's result) must fail."""
    monkeypatch.chdir(tiny_repo)
    (tiny_repo / "metrics.json").write_text('{"loss": 1.3, "frames": 3, "size": "108x60"}')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "commit", "-qam", "tampered"], cwd=tiny_repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q", "-f"], cwd=tiny_repo, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})  # fmt: skip
    assert cli.main(["verify", "--workspace", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    verdicts = {m["metric"]: m["verdict"] for m in out["metrics"]}
    assert verdicts == {"metrics.json:loss": FAIL, "metrics.json:frames": PASS,
                        "metrics.json:size": PASS}  # fmt: skip
    assert out["reproduced"] is False and out["rerun"] == "workspace"


def test_a_bad_tolerance_file_fails_before_any_rerun(tiny_repo, monkeypatch, capsys):
    monkeypatch.chdir(tiny_repo)
    (tiny_repo / "verify.yaml").write_text("rules: [{match: '*', abs: 1, rel: 1}]\n")
    assert cli.main(["verify"]) == 1
    assert "ERROR e2fgvi: verify.yaml: rules.0: Value error" in capsys.readouterr().err
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"],
                           cwd=tiny_repo, capture_output=True, text=True)  # fmt: skip
    assert shown.stdout.strip() == ""
