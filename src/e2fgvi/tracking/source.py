"""A run's name and MLflow's standard source tags, from git and from the DVC experiment.

``dvc exp run`` (in the workspace or from ``--queue``) hands every stage the experiment's name
and baseline commit in ``DVC_EXP_NAME`` and ``DVC_EXP_BASELINE_REV`` (dvc 3.67.1,
``dvc/repo/experiments/queue/base.py``); a plain ``dvc repro`` sets neither.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Mapping

EXP_NAME, BASELINE_REV = "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"


def _git(*args: str) -> str:
    """One git command's output, or '' outside a repository (or without git)."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def run_name(configured: str, env: Mapping[str, str] = os.environ, label: str = "") -> str:
    """``tracking.run_name`` if set, else the DVC experiment's name, else ``<label>-<sha7>``.

    ``label`` says what ran (``names.run_label``: ``e2fgvi-hq-432x240-8gpu-fp32``); without one
    the branch stands in. Outside git (and outside an experiment) the name is the label, or ''
    (MLflow then picks a random name).
    """
    if configured:
        return configured
    if env.get(EXP_NAME):
        return env[EXP_NAME]
    sha = _git("rev-parse", "--short=7", "HEAD")
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    if not sha:
        return label
    if label:
        return f"{label}-{sha}"
    return f"{branch}-{sha}" if branch and branch != "HEAD" else sha


def source_tags(source: str, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """MLflow's ``mlflow.source.*`` and ``mlflow.user`` tags, plus the DVC experiment's own.

    ``mlflow.source.git.commit`` is the commit the run started from: an experiment's baseline,
    else HEAD (uncommitted edits are in the ``git.commit`` tag's ``+dirty``).
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (some containers)
        user = str(os.getuid())
    tags = {"mlflow.source.name": source, "mlflow.source.type": "LOCAL", "mlflow.user": user}
    commit = env.get(BASELINE_REV) or _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
    if env.get(EXP_NAME):
        tags["dvc.exp.name"] = env[EXP_NAME]
    if env.get(BASELINE_REV):
        tags["dvc.exp.baseline_rev"] = env[BASELINE_REV]
    return tags
