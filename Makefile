# Two commands do everything: `make repro` (set up, then the whole DVC pipeline on the sample)
# and `make test` (set up, then lint + the test suite). Both are idempotent: set-up is skipped
# when .venv is current with requirements.lock and pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro verify test test-slow lint format ui image image-base image-test

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/dvc config --local core.analytics false
	@touch $(STAMP)

repro: setup
	$(BIN)/dvc repro

# Rerun every stage as a DVC experiment (the workspace is left alone) and judge its metrics
# against the committed ones under verify.yaml's tolerances (docs/reproducibility.md).
verify: setup
	$(BIN)/e2fgvi verify

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

# The suite within 15 min on 2 cores; the tests marked slow (whole `dvc repro` pipelines, faults
# under training, the UI in Chromium) run in `make test-slow`, and CI runs both.
test: lint
	$(BIN)/python -m pytest -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -m slow

# The MLflow UI on this machine only (http://127.0.0.1:5000), on the store `dvc repro` writes.
UI_PORT ?= 5000
ui: setup
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--artifacts-destination $(CURDIR)/mlruns/artifacts \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The container image (docs/operations.md): docker where its engine runs, else podman, with the
# settings this kind of machine needs. IMAGE_BASE=debian-archive builds on a Debian 12 base made
# from Debian's archive (image-base) instead of the Dockerfile's pinned base; every other step of
# the Dockerfile is the same.
image:
	bash .ci/image.sh build

image-base:
	bash .ci/image.sh base

# Build, then inside the image: imports, doctor, the sample `dvc repro` on a mounted copy of this
# checkout as the image's user, file ownership, `e2fgvi verify --workspace`, and compose.yaml's
# MLflow server + a training run logging to it. Removes what it made (the layer cache stays).
image-test:
	bash .ci/image.sh test
