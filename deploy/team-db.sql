-- The team tracking server's database (docs/team.md): a login role `mlflow` owning database
-- `mlflow`, which holds the runs and MLflow's users. Run it as a PostgreSQL superuser, with the
-- role's password in PGPASSWORD (from deploy/team.env), e.g. on Debian:
--   sudo --preserve-env=PGPASSWORD -u postgres psql -v ON_ERROR_STOP=1 < deploy/team-db.sql
\getenv password PGPASSWORD
CREATE ROLE mlflow LOGIN PASSWORD :'password';
CREATE DATABASE mlflow OWNER mlflow;
