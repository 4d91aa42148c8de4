"""The team tracking server (docs/team.md): MLflow on PostgreSQL, proxied artifacts, basic auth.

A real PostgreSQL cluster (Debian's binaries, started here) and the real ``mlflow server`` with
the command and environment that compose.yaml's ``mlflow-team`` service runs; the train,
evaluate and cost stages log to it over HTTP from ``dvc repro`` with a user's credentials taken
from the environment, and ``e2fgvi cost compare`` reads the runs back.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import mlflow_server
import pytest
import team_server
import yaml
from helpers import ROOT, copy_repo, git_commit_all

from e2fgvi import tracking
from e2fgvi.doctor import dvc_vars

BIN = Path(sys.executable).parent
EXPERIMENT = "team-test"
SHRINK = {
    # 20-frame sample videos: the whole repro then takes 2/3 of the CPU time it takes at 20-60.
    "data": {"sample": {"min_frames": 20, "max_frames": 20}},
    "train": {"iterations": 2, "num_local_frames": 2, "num_ref_frames": 1, "checkpoint_every": 2,
              "image_every": 2},
    "eval": {"max_videos": 1, "vfid": False},
    "cost": {"warmup_steps": 1},
    # Checkpoints (both networks and their optimizer states) are not needed to test the upload.
    "tracking": {"experiment": EXPERIMENT, "log_checkpoints": False},
}  # fmt: skip
# Optional, so that the default services start without it; the team services fail without it.
ENV_FILE = [{"path": "deploy/team.env", "required": False}]
AUTH_FAILED = (
    "authentication failed (HTTP 401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
)


# --------------------------------------------------------------------------- the files, static


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@cache
def _server_help() -> str:
    done = subprocess.run([BIN / "mlflow", "server", "--help"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return done.stdout


def test_compose_team_server_runs_the_tested_command(compose):
    service = compose["services"]["mlflow-team"]
    assert service["profiles"] == ["team"]
    # The same command as start_server runs, but listening on all interfaces of the container.
    assert service["command"] == team_server.server_command(
        "0.0.0.0", 5000, "/workspace/mlruns/artifacts"
    )
    for flag in (c for c in service["command"] if c.startswith("--")):
        assert re.search(rf"^\s+(-\w, )?{flag}\b", _server_help(), re.MULTILINE), flag
    auth_ini = "/workspace/deploy/mlflow-auth.ini"
    assert service["environment"] == team_server.server_environment("postgres", 5432, auth_ini)
    assert f"./deploy/mlflow-auth.ini:{auth_ini}:ro" in service["volumes"]
    assert "team-artifacts:/workspace/mlruns" in service["volumes"]
    assert service["env_file"] == ENV_FILE
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert service["ports"] == ["5000:5000"] and "/health" in str(service["healthcheck"]["test"])


def test_compose_postgres_service(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["profiles"] == ["team"]
    # Debian 12's PostgreSQL major version, the one the tests start.
    assert postgres["image"] == "postgres:15-bookworm"
    # The image creates the role and database that deploy/team-db.sql creates on a host.
    assert postgres["environment"] == {"POSTGRES_USER": "mlflow", "POSTGRES_DB": "mlflow"}
    assert postgres["env_file"] == ENV_FILE
    assert "team-pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "ports" not in postgres, "only the MLflow server reaches the database"
    assert {"team-pgdata", "team-artifacts"} <= set(compose["volumes"])


def test_team_env_script_writes_every_secret_once(tmp_path):
    secrets = team_server.make_secrets(tmp_path)
    assert set(secrets) == {*team_server.SECRETS, "POSTGRES_PASSWORD"}
    assert secrets["POSTGRES_PASSWORD"] == secrets["PGPASSWORD"]
    assert all(len(value) >= 32 for value in secrets.values())
    assert (tmp_path / "team.env").stat().st_mode & 0o077 == 0, "readable by its owner only"
    again = subprocess.run(["sh", str(ROOT / "deploy" / "team-env.sh"), str(tmp_path / "team.env")],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 1 and "exists" in again.stderr
    assert team_server.read_env_file(tmp_path / "team.env") == secrets
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/team.env"], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/team.env must be git-ignored"
    assert "deploy/team.env" in (ROOT / ".dockerignore").read_text().splitlines()


def _doc_commands() -> list[list[str]]:
    """Every command line in docs/team.md's bash blocks (continuations joined, split)."""
    text = (ROOT / "docs" / "team.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(shlex.split(line, comments=True))
    return commands


def test_docs_give_the_tested_commands():
    commands = _doc_commands()
    servers = [c for c in commands if c[:2] == ["mlflow", "server"]]
    assert servers == [team_server.server_command("0.0.0.0", 5000, "/srv/mlflow/artifacts")]
    exported = {a.split("=")[0] for c in commands if c[:1] == ["export"] for a in c[1:]}
    assert set(team_server.server_environment("", 0, "")) <= exported
    flat = [" ".join(c) for c in commands]
    assert any(c.endswith("psql -v ON_ERROR_STOP=1 < deploy/team-db.sql") for c in flat)
    assert "sh deploy/team-env.sh" in flat
    assert any(c.startswith("docker compose --profile team up -d mlflow-team") for c in flat)


def test_without_postgresql_the_live_tests_skip_except_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(team_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(team_server, "DEBIAN_POSTGRESQL", tmp_path)
    assert team_server.postgres_bindir() is None
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        team_server.require_postgres()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs it"):
        team_server.require_postgres()


# --------------------------------------------------------------------------- the live server


@dataclass
class Team:
    url: str
    pg: team_server.Postgres
    secrets: dict[str, str]
    artifacts: Path


@pytest.fixture(scope="module")
def team(module_folder):
    """PostgreSQL set up by deploy/team-db.sql, and the team server on it."""
    bindir = team_server.require_postgres()
    folder = module_folder("team")
    secrets = team_server.make_secrets(folder)
    pg = team_server.start_postgres(bindir)
    try:
        script = ROOT / "deploy" / "team-db.sql"
        with script.open() as sql:  # as docs/team.md runs it
            pg.as_superuser("psql", "-d", "postgres", "-v", "ON_ERROR_STOP=1", stdin=sql,
                            env={"PGPASSWORD": secrets["PGPASSWORD"]})  # fmt: skip
        server = team_server.start_server(pg, secrets, folder / "artifacts", folder / "server.log")
        try:
            yield Team(server.url, pg, secrets, folder / "artifacts")
        finally:
            mlflow_server.stop(server.process)
    finally:
        pg.stop()


def _request(url: str, auth: tuple[str, str] | None = None, body: dict | None = None,
             method: str | None = None):  # fmt: skip
    """(HTTP status, body) of a GET, or of a JSON POST (or ``method``) when ``body`` is given."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode())
                           .decode())  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _admin(team: Team) -> tuple[str, str]:
    return team_server.ADMIN, team.secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]


def _create_user(team: Team, name: str, password: str) -> None:
    """As docs/team.md does it: the admin POSTs to the basic-auth app's users/create."""
    body = {"username": name, "password": password}
    status, reply = _request(f"{team.url}/api/2.0/mlflow/users/create", _admin(team), body)
    assert status == 200, reply


def test_the_server_refuses_anyone_without_the_right_credentials(team):
    search = f"{team.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert _request(search)[0] == 401
    assert _request(search, (team_server.ADMIN, "not-the-password"))[0] == 401
    assert _request(search, _admin(team))[0] == 200
    assert _request(f"{team.url}/health")[0] == 200, "the healthcheck needs no credentials"
    _create_user(team, "reader", "reader-password-1")
    new_user = {"username": "intruder", "password": "intruder-password"}
    status, _ = _request(f"{team.url}/api/2.0/mlflow/users/create", ("reader", "reader-password-1"),
                         new_user)  # fmt: skip
    assert status == 403, "only the admin creates users"
    # The admin changes a password (docs/team.md): the old one stops working at once.
    changed = {"username": "reader", "password": "reader-password-2"}
    update = f"{team.url}/api/2.0/mlflow/users/update-password"
    assert _request(update, _admin(team), changed, method="PATCH")[0] == 200
    assert _request(search, ("reader", "reader-password-1"))[0] == 401
    assert _request(search, ("reader", "reader-password-2"))[0] == 200
    users = team.pg.query("SELECT username, is_admin FROM users", team.secrets["PGPASSWORD"])
    assert ["admin", "t"] in users and ["reader", "f"] in users


def test_missing_credentials_are_named_and_nothing_is_lost(team, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    spool = tmp_path / "spool.jsonl"
    logger = tracking.RunLogger(team.url, "team-auth", spool=spool, retry_interval_s=0.0)
    with caplog.at_level(logging.WARNING, logger="e2fgvi.tracking"):
        logger.log_metrics({"loss/hole": 0.5}, step=1)
        assert not logger.close()
    assert f"MLflow tracking at {team.url} {AUTH_FAILED} in the environment" in caplog.text
    assert "unreachable" not in caplog.text and spool.exists()
    _create_user(team, "late", "late-password-12")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "late")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "late-password-12")
    run_id = tracking.replay_spool(spool, team.url)
    assert tracking.metric_history(team.url, run_id, "loss/hole") == [(1, 0.5)]


def _stage_env(url: str, copy: Path, user: tuple[str, str] | None) -> dict[str, str]:
    """A trainer's environment: the server's URL and a user; no database access at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(copy / "src"),
               DVC_NO_ANALYTICS="1", MLFLOW_TRACKING_URI=url)  # fmt: skip
    if user is not None:
        env.update(MLFLOW_TRACKING_USERNAME=user[0], MLFLOW_TRACKING_PASSWORD=user[1])
    return env


def _run(copy: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True)


def _merge(into: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.fixture(scope="module")
def repro(team, module_folder) -> tuple[Path, tuple[str, str]]:
    """`dvc repro evaluate cost` on the sample in a fresh copy, logging as user `trainer`."""
    user = ("trainer", "trainer-password")
    _create_user(team, *user)
    copy = copy_repo(module_folder("team-repo"))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    _merge(params, SHRINK)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (copy / "dvc.lock").unlink(missing_ok=True)
    git_commit_all(copy)
    env = _stage_env(team.url, copy, user)
    done = _run(copy, env, str(BIN / "dvc"), "repro", "evaluate", "cost")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for stage in ("train", "evaluate", "cost"):
        assert f"Running stage '{stage}'" in done.stdout, stage
    # MLflow's own notice that a pyfunc model is stored with cloudpickle is expected; any other
    # warning (credentials, buffering, spooling) is not.
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    unexpected = [line for line in warnings if "mlflow.pyfunc: Passing a Python object" not in line]
    assert not unexpected, done.stderr[-3000:]
    return copy, user


def test_stages_log_over_http_into_postgres_and_cost_compare_reads_it(team, repro, monkeypatch):
    copy, user = repro
    ref = json.loads((copy / "data" / "run" / "mlflow_run.json").read_text())
    assert ref["uri"] == team.url and ref["spool"] is None
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
    (run,) = tracking.search_runs(team.url, [EXPERIMENT])
    assert run.run_id == ref["run_id"] and run.status == "FINISHED"
    assert run.params["train.iterations"] == "2"
    for metric in ("loss/generator", "eval/psnr", "eval/ssim", "measured/step_time_median_s",
                   "measured/device_hours"):  # fmt: skip
        assert metric in run.metrics, metric
    evaluated = json.loads((copy / "reports" / "eval" / "metrics.json").read_text())
    assert run.metrics["eval/psnr"] == pytest.approx(evaluated["psnr"])
    assert [s for s, _ in tracking.metric_history(team.url, run.run_id, "loss/hole")] == [1, 2]
    assert {"images", "eval", "cost"} <= set(tracking.list_artifacts(team.url, run.run_id))

    # The runs table and the metrics are rows of the PostgreSQL database.
    password = team.secrets["PGPASSWORD"]
    ((status, location),) = team.pg.query(
        "SELECT r.status, e.artifact_location FROM runs r JOIN experiments e "
        f"USING (experiment_id) WHERE r.run_uuid = '{run.run_id}'", password)  # fmt: skip
    assert status == "FINISHED" and location.startswith("mlflow-artifacts:/")
    metrics = f"SELECT key FROM latest_metrics WHERE run_uuid = '{run.run_id}'"
    rows = team.pg.query(metrics, password)
    assert {"eval/psnr", "measured/device_hours", "loss/generator"} <= {k for (k,) in rows}

    # Artifacts are proxied: stored by the server, fetched back through it with the credentials.
    experiment = tracking.experiment_id(team.url, EXPERIMENT)
    stored = team.artifacts / experiment / run.run_id / "artifacts" / "cost" / "cost.md"
    local = (copy / "reports" / "cost" / "cost.md").read_bytes()
    assert stored.read_bytes() == local
    path = f"{experiment}/{run.run_id}/artifacts/cost/cost.md"
    fetched = f"{team.url}/api/2.0/mlflow-artifacts/artifacts/{path}"
    assert _request(fetched, user) == (200, local)
    assert _request(fetched)[0] == 401
    assert not list((copy / "mlruns").rglob("cost.md")), "nothing went to a local store"

    env = _stage_env(team.url, copy, user)
    done = _run(copy, env, str(BIN / "e2fgvi"), "cost", "compare", "--experiment", EXPERIMENT,
                "--format", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["run_id"] == run.run_id and row["psnr"] == pytest.approx(evaluated["psnr"])
    assert row["device_hours"] == pytest.approx(run.metrics["measured/device_hours"])


def test_a_stage_and_cost_compare_name_wrong_credentials(team, repro):
    copy, user = repro
    wrong = _stage_env(team.url, copy, (user[0], "not-the-password"))
    done = _run(copy, wrong, str(BIN / "e2fgvi"), "cost", "compare")
    assert done.returncode == 1 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"cannot read the MLflow runs: {AUTH_FAILED}" in errors[0], errors
    missing = _stage_env(team.url, copy, None)
    command = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]["cost"]["cmd"]
    for name, value in dvc_vars(copy / "dvc.yaml").items():
        command = command.replace(f"${{{name}}}", value)
    done = _run(copy, missing, *shlex.split(command))
    assert f"MLflow tracking at {team.url} {AUTH_FAILED}" in done.stderr, done.stderr[-3000:]


def test_a_database_backup_restores_the_runs_and_users(team, repro):
    """docs/team.md's pg_dump / createdb / pg_restore, into a second database."""
    password = team.secrets["PGPASSWORD"]
    dump = str(team.pg.folder / "mlflow.dump")  # the folder the PostgreSQL user may write
    team.pg.as_mlflow("pg_dump", "-Fc", "-f", dump, "mlflow", password=password)
    team.pg.as_superuser("createdb", "-O", "mlflow", "mlflow_restored")
    team.pg.as_mlflow("pg_restore", "-d", "mlflow_restored", dump, password=password)
    query = "SELECT run_uuid, status FROM runs ORDER BY run_uuid"
    assert team.pg.query(query, password, "mlflow_restored") == team.pg.query(query, password)
    users = "SELECT username, password_hash FROM users ORDER BY username"
    assert team.pg.query(users, password, "mlflow_restored") == team.pg.query(users, password)
