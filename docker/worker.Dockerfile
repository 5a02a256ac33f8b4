# syntax=docker/dockerfile:1
# The inference worker: `pagoda serve` on a CUDA base. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t pagoda-worker:0.1.0 .
# PyTorch's wheels bring their own CUDA libraries; the node's driver comes in through the NVIDIA
# container runtime. Triton compiles small launchers at run time, hence gcc and Python headers.
# curl and tar serve the init container that fetches `source.uri` archives; the Hugging Face
# `hf` CLI (from huggingface_hub) serves `source.hf`. The default model (stories260K) is package
# data, so `docker run -p 8000:8000 pagoda-worker:0.1.0` serves it with nothing mounted.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev curl tar ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/pagoda
ENV PATH=/opt/pagoda/bin:$PATH
COPY . /src
RUN pip install "/src[worker]" && rm -rf /src

# The pod runs as 1000 with a read-only root filesystem; every cache lives in /tmp (an emptyDir).
RUN groupadd --gid 1000 pagoda \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp pagoda \
    && mkdir -p /etc/pagoda /models
ENV HOME=/tmp HF_HOME=/tmp/hf TRITON_CACHE_DIR=/tmp/triton
USER 1000:1000
EXPOSE 8000
ENTRYPOINT []
CMD ["pagoda", "serve", "--host", "0.0.0.0"]
