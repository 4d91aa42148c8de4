# First version; the container issue pins the base by digest and adds compose + doctor.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 DVC_NO_ANALYTICS=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace
COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
RUN python3.11 -m venv /opt/venv \
    && /opt/venv/bin/pip install -r requirements.lock \
    && /opt/venv/bin/pip install --no-deps --no-build-isolation -e .
ENV PATH=/opt/venv/bin:$PATH
CMD ["dvc", "repro"]
