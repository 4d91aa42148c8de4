# e2fgvi-repro: the pinned environment for `dvc repro` on an NVIDIA GPU machine (docs/operations.md).
#
# Base image: CUDA 13.0 + cuDNN 9 runtime on Ubuntu 24.04 LTS, pinned by tag AND digest (the
# linux/amd64 manifest): Docker pulls by the digest, so a rebuild gets the same base even after the
# tag is republished; `docker buildx imagetools inspect <tag>` shows the tag's current digest when
# you decide to move it.
# Why this base: torch 2.14.1 from requirements.lock is the cu130 build and brings its own CUDA 13.0
# user-space libraries (the nvidia-*-cu13 / nvidia-cudnn-cu13 wheels), so the base's CUDA is not what
# torch runs on; it only must not conflict (same CUDA 13.0, cuDNN 9) and it sets
# NVIDIA_REQUIRE_CUDA=cuda>=13.0, so the NVIDIA container toolkit refuses a driver too old for
# CUDA 13 at `docker run` instead of torch failing later.
FROM nvidia/cuda:13.0.3-cudnn-runtime-ubuntu24.04@sha256:af851538a2bb05f587f27b660d61de3643d964e75ef5c04f4086ff2b36f2a12a

# UID/GID of the non-root user: match the host user who owns the mounted checkout
# (docker build --build-arg UID="$(id -u)" --build-arg GID="$(id -g)").
ARG UID=1000
ARG GID=1000
# Signing key of the deadsnakes PPA (Python 3.11 for Ubuntu 24.04, which ships 3.12 only).
ARG DEADSNAKES_KEY=F23C5A6CF475977595C89F51BA6932366A755776

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python 3.11 (pyproject: requires-python >=3.11,<3.12) from deadsnakes, its key checked against the
# fingerprint above; git because DVC needs a git work tree. Not version-pinned: Ubuntu's archive and
# the PPA keep only the newest build of each package, so an exact pin breaks the build at the next
# security update; every Python package, torch included, is pinned by requirements.lock instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
    && curl -fsSL "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x${DEADSNAKES_KEY}" \
        | gpg --dearmor -o /usr/share/keyrings/deadsnakes.gpg \
    && gpg --show-keys --with-colons /usr/share/keyrings/deadsnakes.gpg \
        | awk -F: '$1 == "fpr" { print $10 }' | grep -qx "${DEADSNAKES_KEY}" \
    && echo "deb [signed-by=/usr/share/keyrings/deadsnakes.gpg]" \
        "https://ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu noble main" \
        > /etc/apt/sources.list.d/deadsnakes.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends git python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

# The non-root user. Ubuntu 24.04 images already have 'ubuntu' as 1000:1000; it is replaced so
# that files written into the mounted checkout belong to the host user. A checkout owned by
# another uid is still accepted by git (safe.directory).
RUN if id -u ubuntu > /dev/null 2>&1; then userdel ubuntu && rm -rf /home/ubuntu; fi \
    && if getent group ubuntu > /dev/null; then groupdel ubuntu; fi \
    && groupadd --gid "${GID}" e2fgvi \
    && useradd --no-log-init --create-home --uid "${UID}" --gid "${GID}" e2fgvi \
    && git config --system --add safe.directory /workspace \
    && install -d -o e2fgvi -g e2fgvi /opt/venv /workspace

USER ${UID}:${GID}
WORKDIR /workspace

# Dependencies: exactly requirements.lock, as `make setup` installs them (own layer, so that a
# code change does not reinstall torch).
COPY --chown=e2fgvi:e2fgvi requirements.lock pyproject.toml ./
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

# No NVIDIA banner entrypoint: `e2fgvi doctor --json` output must stay parseable.
ENTRYPOINT []
CMD ["dvc", "repro"]
