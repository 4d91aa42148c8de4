"""The team tracking server for tests: Debian's PostgreSQL plus MLflow's basic-auth app.

``server_command`` and ``server_environment`` are what compose.yaml's ``mlflow-team`` service and
docs/team.md run (tests/test_team_server.py checks both); a test changes only the address, the
port and the artifact folder. PostgreSQL is a throwaway cluster (initdb + pg_ctl) in a temporary
folder, on a free port of 127.0.0.1, set up by deploy/team-db.sql as docs/team.md does it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow_server
import pytest

ROOT = Path(__file__).resolve().parents[1]
AUTH_INI = ROOT / "deploy" / "mlflow-auth.ini"
SECRETS = ("PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
ADMIN = "admin"  # admin_username in deploy/mlflow-auth.ini
DEBIAN_POSTGRESQL = Path("/usr/lib/postgresql")  # <major version>/bin/{initdb,pg_ctl,...}


def server_command(host: str, port: int, artifacts: str) -> list[str]:
    """The team server: runs and users in PostgreSQL, artifacts proxied, basic auth."""
    return ["mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", "postgresql:///mlflow",
            "--serve-artifacts", "--artifacts-destination", artifacts,
            "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip


def server_environment(pghost: str, pgport: int, auth_ini: str) -> dict[str, str]:
    """Its environment besides the secrets: libpq's connection and the auth app's config."""
    return {"PGHOST": pghost, "PGPORT": str(pgport), "PGUSER": "mlflow",
            "MLFLOW_AUTH_CONFIG_PATH": auth_ini,
            # The GenAI job runner (7 huey consumers) serves nothing this bundle logs.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # fmt: skip


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as compose's env_file reads them."""
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def make_secrets(folder: Path) -> dict[str, str]:
    """deploy/team-env.sh's fresh secrets file, read back."""
    path = folder / "team.env"
    subprocess.run(["sh", str(ROOT / "deploy" / "team-env.sh"), str(path)], check=True,
                   capture_output=True)  # fmt: skip
    return read_env_file(path)


def postgres_bindir() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = [p.parent for p in DEBIAN_POSTGRESQL.glob("*/bin/pg_ctl")]
    return max(versions, key=lambda p: int(p.parent.name), default=None)


def require_postgres() -> Path:
    """The PostgreSQL binaries; skip without them, except in CI (.ci/run installs them)."""
    bindir = postgres_bindir()
    if bindir is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) absent: apt-get install postgresql"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run installs it before make test")
        pytest.skip(reason)
    return bindir


@dataclass
class Postgres:
    bindir: Path
    folder: Path
    port: int
    superuser: str
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def run(self, program: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        command = [*self.as_user, str(self.bindir / program), *args]
        # In its own folder: the checkout may be closed to the `postgres` user.
        return subprocess.run(command, cwd=self.folder, capture_output=True, text=True, **kwargs)

    def as_superuser(self, program: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """A client program as the superuser over the Unix socket (peer authentication)."""
        env = {**os.environ, **kwargs.pop("env", {}), "PGHOST": str(self.folder),
               "PGPORT": str(self.port), "PGUSER": self.superuser}  # fmt: skip
        done = self.run(program, *args, env=env, **kwargs)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def as_mlflow(self, program: str, *args: str, password: str) -> subprocess.CompletedProcess:
        """A client program as the mlflow role over TCP, the way the MLflow server connects."""
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": "mlflow",
               "PGPASSWORD": password}  # fmt: skip
        done = self.run(program, *args, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def query(self, sql: str, password: str, database: str = "mlflow") -> list[list[str]]:
        """Rows of a query, as the mlflow role."""
        done = self.as_mlflow("psql", "-d", database, "-A", "-t", "-F", "\t", "-c", sql,
                              password=password)  # fmt: skip
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def stop(self) -> None:
        """Stop the cluster (immediate: it is thrown away) and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(bindir: Path) -> Postgres:
    """A new cluster on a free port of 127.0.0.1: local peer login, passwords over TCP."""
    # Not under pytest's tmp_path: that is private to the user running pytest, and PostgreSQL
    # refuses to run as root, so under root it runs as the `postgres` system user.
    folder = Path(tempfile.mkdtemp(prefix="e2fgvi-pg-"))
    superuser, as_user = getpass.getuser(), []
    if os.geteuid() == 0:
        superuser, as_user = "postgres", ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    server = Postgres(bindir, folder, mlflow_server.free_port(), superuser, as_user)
    try:
        auth = ["--auth-local=peer", "--auth-host=scram-sha-256"]
        done = server.run("initdb", "-D", str(server.data), "-U", superuser, "-E", "UTF8", *auth,
                          "--no-sync")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        options = f"-h 127.0.0.1 -p {server.port} -k {folder}"
        done = server.run("pg_ctl", "-D", str(server.data), "-l", str(folder / "postgres.log"),
                          "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + _tail(folder / "postgres.log")
    except BaseException:
        server.stop()
        raise
    return server


def _tail(path: Path) -> str:
    return path.read_text()[-2000:] if path.exists() else ""


def start_server(pg: Postgres, secrets: dict[str, str], artifacts: Path, log: Path):
    """The team ``mlflow server`` on a free port of 127.0.0.1, healthy."""
    port = mlflow_server.free_port()
    command = server_command("127.0.0.1", port, str(artifacts))
    command[0] = str(Path(sys.executable).parent / "mlflow")
    env = {**os.environ, **server_environment("127.0.0.1", pg.port, str(AUTH_INI))}
    env.update({key: secrets[key] for key in SECRETS})
    return mlflow_server.launch(command, env, log, f"http://127.0.0.1:{port}")
