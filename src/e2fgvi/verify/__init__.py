"""``e2fgvi verify``: rerun the pipeline and judge each metric against the committed one.

Reruns every stage as a DVC experiment in a temporary copy of the workspace (``dvc exp run
--temp --force``), then compares its metrics with those committed at ``--baseline`` (``dvc
metrics diff``) under the tolerance file's rules (``e2fgvi.verify.tolerances``) and prints a
table: metric, committed, now, |diff|, tolerance, PASS/FAIL/SKIP. Exit status 0 when no metric
fails, 1 otherwise. ``--workspace`` judges the workspace's results (after ``dvc repro``) and
``--exp NAME`` an existing experiment, without rerunning.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from e2fgvi.verify.rerun import default_name, metrics_diff, run_experiment
from e2fgvi.verify.tolerances import load_tolerances
from e2fgvi.verify.verdict import judge_all, passed, render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline", default="HEAD", help="git revision whose committed metrics are the reference"
    )
    parser.add_argument(
        "--tolerances", type=Path, default=Path("verify.yaml"), help="tolerance rules file"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--workspace", action="store_true", help="judge the workspace's metrics; no rerun"
    )
    source.add_argument("--exp", metavar="NAME", help="judge this DVC experiment; no rerun")
    parser.add_argument("--name", help="the rerun experiment's name (verify-<UTC time>)")
    parser.add_argument("--all", action="store_true", help="list the skipped metrics too")
    parser.add_argument("--json", action="store_true", help="machine-readable verdicts")


def run(args: argparse.Namespace) -> int:
    tolerances = load_tolerances(args.tolerances)  # a bad file fails now, not after the rerun
    root = Path.cwd()
    target = (
        None if args.workspace else args.exp or run_experiment(root, args.name or default_name())
    )
    rows = judge_all(metrics_diff(root, args.baseline, target), tolerances)
    if args.json:
        out = {"reproduced": passed(rows), "baseline": args.baseline,
               "rerun": target or "workspace", "metrics": [asdict(r) for r in rows]}  # fmt: skip
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    else:
        sys.stdout.write(f"{args.baseline} (committed) vs {target or 'workspace'} (now)\n")
        sys.stdout.write(render(rows, show_skipped=args.all))
    return 0 if passed(rows) else 1
