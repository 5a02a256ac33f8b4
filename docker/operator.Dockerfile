# syntax=docker/dockerfile:1
# The operator: `pagoda operator`, without the worker's heavy dependencies (torch, transformers),
# which it never imports. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t pagoda-operator:0.1.0 .
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY . /src
RUN pip install "/src[operator]" && rm -rf /src
# Non-root, matching manifests/operator.yaml (which also makes the root filesystem read-only).
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["pagoda"]
CMD ["operator"]
