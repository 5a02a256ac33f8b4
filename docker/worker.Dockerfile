# syntax=docker/dockerfile:1
# The inference worker: `pagoda serve`. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t pagoda-worker:0.1.0 .
# With no registry and no Docker, `python -m images worker` builds the same image (see
# images/README.md): the same Debian, packages, pinned wheels and settings, which
# tests/images/test_worker_dockerfile.py holds equal.
# PyTorch's wheels bring their own CUDA libraries; the node's driver comes in through the NVIDIA
# container runtime. Triton compiles small launchers at run time, hence gcc and Python headers.
# curl and tar serve the init container that fetches `source.uri` archives; the Hugging Face
# `hf` CLI (from huggingface_hub) serves `source.hf`. The default model (stories260K) is package
# data, so `docker run -p 8000:8000 pagoda-worker:0.1.0` serves it with nothing mounted.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev curl tar ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The pod runs as 1000 with a read-only root filesystem; every cache lives in /tmp (an emptyDir).
RUN groupadd --gid 1000 pagoda \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp pagoda \
    && mkdir -p /etc/pagoda /models
# The pinned, hashed dependencies first, so a code change rebuilds only the small layer after.
COPY docker/worker.lock.txt /tmp/worker.lock.txt
RUN python3 -m venv /opt/pagoda \
    && /opt/pagoda/bin/pip install --no-cache-dir --require-hashes -r /tmp/worker.lock.txt \
    && rm /tmp/worker.lock.txt
COPY . /src
RUN /opt/pagoda/bin/pip install --no-cache-dir --no-deps /src && rm -rf /src
# LD_LIBRARY_PATH: where GKE's device plugin mounts the driver (NVIDIA's CUDA images set it too).
ENV PATH=/opt/pagoda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    TRITON_CACHE_DIR=/tmp/triton \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64
USER 1000:1000
EXPOSE 8000
CMD ["pagoda", "serve", "--host", "0.0.0.0"]
