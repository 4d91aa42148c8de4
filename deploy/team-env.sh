#!/bin/sh
# Write fresh secrets for the team tracking server (docs/team.md) to FILE (default
# deploy/team.env), readable by its owner only. It refuses to overwrite: the database password is
# fixed when PostgreSQL first creates its data directory, and the admin password when MLflow first
# creates the admin user.
set -eu
file=${1:-deploy/team.env}
if [ -e "$file" ]; then
    echo "$file exists; keep it (its passwords are already in use) or delete it first" >&2
    exit 1
fi
secret() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
db=$(secret 16)
umask 077
cat > "$file" <<END
# The team tracking server's secrets (docs/team.md). Never commit this file.
# PostgreSQL password of the mlflow role: the postgres image sets it at its first start
# (POSTGRES_PASSWORD); the MLflow server's driver (libpq) logs in with it (PGPASSWORD).
POSTGRES_PASSWORD=$db
PGPASSWORD=$db
# MLflow's admin user ("admin", deploy/mlflow-auth.ini), created at the server's first start.
MLFLOW_AUTH_ADMIN_PASSWORD=$(secret 16)
# Signs the basic-auth app's CSRF tokens; the same value on every server process.
MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret 32)
END
echo "wrote $file"
