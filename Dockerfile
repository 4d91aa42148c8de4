# e2fgvi-repro: the pinned environment for `dvc repro` on an NVIDIA GPU machine (docs/operations.md).
#
# Base image: Debian 12 (bookworm), pinned by tag AND digest. Debian 12 ships Python 3.11, the
# version pyproject requires, and torch 2.14.1 from requirements.lock is the cu130 build that brings
# its own CUDA 13.0 and cuDNN 9 user-space libraries (the nvidia-*-cu13 wheels), so a CUDA base
# image would only carry a second copy of them (docs/operations.md: the base decision). The host's
# NVIDIA Container Toolkit adds the driver (libcuda, libnvidia-ml) at `docker run --gpus all`.
# BASE is the only thing a build may change: CI builds every step below unchanged on a Debian 12
# base made from Debian's archive (`make image-test`), because no image registry is reachable there.
ARG BASE=docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
FROM ${BASE}

# The settings the NVIDIA Container Toolkit reads (CUDA base images set them too): all GPUs given
# to the container, compute + NVML, and a driver that supports CUDA 13.0 (requirements.lock's
# nvidia-cuda-runtime), so a driver too old for CUDA 13 is refused at `docker run` instead of
# torch failing later.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0" \
    DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python 3.11 (pyproject: requires-python >=3.11,<3.12) from Debian; git because DVC needs a git
# work tree. Not version-pinned: Debian's archive keeps only the newest build of each package, so an
# exact pin breaks the build at the next security update; every Python package, torch included, is
# pinned by requirements.lock instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

# UID/GID of the non-root user: match the host user who owns the mounted checkout
# (docker build --build-arg UID="$(id -u)" --build-arg GID="$(id -g)"), so that files written into
# it belong to that user. A checkout owned by another uid is still accepted by git (safe.directory).
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "${GID}" e2fgvi \
    && useradd --no-log-init --create-home --uid "${UID}" --gid "${GID}" e2fgvi \
    && git config --system --add safe.directory /workspace \
    && install -d -o e2fgvi -g e2fgvi /opt/venv /workspace

USER ${UID}:${GID}
WORKDIR /workspace

# Dependencies: exactly requirements.lock, as `make setup` installs them (own layer keyed on that
# file alone, so that a code or pyproject.toml change does not reinstall torch).
COPY --chown=e2fgvi:e2fgvi requirements.lock ./
RUN python3.11 -m venv /opt/venv \
    && pip install --no-cache-dir -r requirements.lock

# The package, editable like `make setup`: /opt/venv points at /workspace/src, so a checkout
# mounted over /workspace runs its own code with this image's pinned environment. The copy baked
# in here becomes a one-commit git repository so that `dvc repro` also works without a mount.
COPY --chown=e2fgvi:e2fgvi . .
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && mkdir -p data mlruns \
    && git init --quiet \
    && git add --all \
    && git -c user.name=e2fgvi-image -c user.email=image@e2fgvi.invalid \
        commit --quiet -m "e2fgvi-repro sources baked into the image"

# Data and the MLflow store live outside the container. Mount them explicitly (-v ...:/workspace/data)
# or Docker creates anonymous volumes that hide a mounted checkout's own data/ and mlruns/.
VOLUME ["/workspace/data", "/workspace/mlruns"]

ENTRYPOINT []
CMD ["dvc", "repro"]
