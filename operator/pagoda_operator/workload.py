"""Worker pods and the Deployments that run them, as plain Kubernetes objects."""

from __future__ import annotations

import json
import math
import posixpath

from .api.spec import ApiKeySecret, ModelSource, ResourcesSpec, RolloutSpec, ServingSpec
from .api.tier_config import TierConfig
from .naming import (
    GPU,
    LABEL_REVISION,
    Owner,
    common_labels,
    config_map_name,
    deployment_name,
    tier_selector,
)
from .strategy import Strategy

CONFIG_DIR = "/etc/pagoda"
ENGINE_FILE = "engine.json"
API_KEY_DIR = f"{CONFIG_DIR}/api-key"
MODELS_DIR = "/models"
DOWNLOAD_DIR = f"{MODELS_DIR}/model"
# Before SIGTERM, give Service endpoints time to drop the pod, so no new request reaches a
# server that has begun draining.
PRESTOP_SECONDS = 5
EXIT_SECONDS = 5  # after the drain: the server's own shutdown, before the kubelet kills it
# Tensor parallelism runs one process per GPU, and NCCL shares buffers between them through
# /dev/shm, which the container runtime caps at 64 MiB. 1Gi as NCCL's guide suggests for
# containers; the tmpfs counts against the pod's memory limit only as far as it is used.
SHM_SIZE = "1Gi"
STARTUP_PERIOD_SECONDS = 10
WORKER_UID = 1000
# A container that fails with an empty /dev/termination-log gets its log's tail as its
# termination message, which the kubelet reports and status quotes (health.py).
TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"
# Download, check (when MODEL_SHA256 is set) and unpack a `source.uri` archive. Each failure
# ends the log with one line that says what failed: the termination message.
FETCH_URI_SCRIPT = """\
archive="${TMPDIR:-/tmp}/model.tar"
mkdir -p "$TARGET"
curl -fsSL --retry 5 -o "$archive" "$MODEL_URI" || {
  code=$?
  echo "fetch-model: downloading $MODEL_URI failed (curl exit code $code)" >&2
  exit "$code"
}
if [ -n "${MODEL_SHA256:-}" ] && ! echo "$MODEL_SHA256  $archive" | sha256sum -c --status; then
  got=$(sha256sum "$archive" | cut -c1-64)
  echo "fetch-model: checksum of $MODEL_URI did not match: expected $MODEL_SHA256, got $got" >&2
  exit 1
fi
tar -xf "$archive" -C "$TARGET"
rm "$archive"
"""


def engine_config_map(
    owner: Owner, config: TierConfig, annotations: dict[str, str] | None = None
) -> dict:
    """The revision's engine.json, plus the whole TierConfig so a rollback can re-render it.
    Content-addressed by name, hence immutable; `annotations` are the facts the operator
    remembers about the revision (records.py), and metadata stays writable."""
    engine = json.dumps(config.engine.engine_json(), indent=2, sort_keys=True) + "\n"
    revision = config.model_dump_json(by_alias=True, indent=2) + "\n"
    name = config_map_name(owner.name, config.tier, config.revision)
    metadata = owner.metadata(name, config.tier, **{LABEL_REVISION: config.revision})
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "immutable": True,
        "data": {ENGINE_FILE: engine, "revision.json": revision},
    }


def deployment(
    owner: Owner, config: TierConfig, replicas: int, strategy: Strategy, rollout: RolloutSpec
) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(deployment_name(owner.name, config.tier), config.tier),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": tier_selector(owner.name, config.tier)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": strategy.max_surge,
                    "maxUnavailable": strategy.max_unavailable,
                },
            },
            "progressDeadlineSeconds": rollout.progress_deadline_seconds,
            # Bake time: a pod counts as available, and a rollout as complete, only once its
            # pods have stayed ready this long.
            "minReadySeconds": rollout.min_ready_seconds,
            "revisionHistoryLimit": 3,
            "template": pod_template(owner, config),
        },
    }


def pod_template(owner: Owner, config: TierConfig) -> dict:
    user_env = [variable.container_env() for variable in config.env]
    model_dir, model_volume, fetch = _model(config.source, config.image, user_env)
    drain = drain_seconds(config.serving)
    volumes, mounts = _volumes(owner, config, model_volume)
    command = _serve_command(config, model_dir, drain)
    spec = {
        "containers": [_worker(config, command, mounts, user_env)],
        "volumes": volumes,
        "terminationGracePeriodSeconds": PRESTOP_SECONDS + drain + EXIT_SECONDS,
        "securityContext": pod_security(WORKER_UID),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    if fetch is not None:
        spec["initContainers"] = [fetch]
    spec |= _placement(config.resources)
    return {"metadata": _pod_metadata(owner, config), "spec": spec}


def _volumes(owner: Owner, config: TierConfig, model: dict) -> tuple[list[dict], list[dict]]:
    """The pod's volumes, and where the worker mounts them."""
    volumes: list[dict] = [
        model,
        {
            "name": "engine-config",
            "configMap": {"name": config_map_name(owner.name, config.tier, config.revision)},
        },
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict] = [
        {"name": "model", "mountPath": MODELS_DIR, "readOnly": True},
        {
            "name": "engine-config",
            "mountPath": f"{CONFIG_DIR}/{ENGINE_FILE}",
            "subPath": ENGINE_FILE,
            "readOnly": True,
        },
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    api_key = config.serving.api_key_secret
    if api_key is not None:
        volumes.append(key_volume("api-key", api_key))
        mounts.append({"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})
    if config.engine.tensor_parallel_size > 1:
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _serve_command(config: TierConfig, model_dir: str, drain: int) -> list[str]:
    command = [
        "pagoda", "serve",
        "--model", model_dir,
        "--served-model-name", config.served_name,
        "--host", "0.0.0.0",
        "--port", str(config.serving.port),
        "--config", f"{CONFIG_DIR}/{ENGINE_FILE}",
        "--drain-timeout", str(drain),
    ]  # fmt: skip
    if config.serving.api_key_secret is not None:  # mounted by _volumes
        command += ["--api-key-file", f"{API_KEY_DIR}/key"]
    return command


def _worker(
    config: TierConfig, command: list[str], mounts: list[dict], user_env: list[dict]
) -> dict:
    return {
        "name": "worker",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": command,
        "ports": [{"name": "http", "containerPort": config.serving.port, "protocol": "TCP"}],
        "env": [*_scratch_env(), *user_env],
        "resources": _resources(config),
        "startupProbe": http_probe(
            "/health",
            period=STARTUP_PERIOD_SECONDS,
            failures=math.ceil(config.serving.startup_timeout_seconds / STARTUP_PERIOD_SECONDS),
        ),
        "readinessProbe": http_probe("/ready", period=5, failures=3),
        "livenessProbe": http_probe("/health", period=10, failures=3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "volumeMounts": mounts,
        "securityContext": container_security(),
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }


def _placement(resources: ResourcesSpec) -> dict:
    """The pod spec's nodeSelector and tolerations, where the spec sets them."""
    placement: dict = {}
    if resources.node_selector:
        placement["nodeSelector"] = dict(resources.node_selector)
    if resources.tolerations:
        placement["tolerations"] = [
            {k: v for k, v in t.model_dump(by_alias=True).items() if v not in ("", None)}
            for t in resources.tolerations
        ]
    return placement


def _pod_metadata(owner: Owner, config: TierConfig) -> dict:
    labels = {
        **common_labels(owner.name, config.tier),
        **tier_selector(owner.name, config.tier),
        LABEL_REVISION: config.revision,
    }
    metadata: dict = {"labels": labels}
    if config.pod_annotations:
        metadata["annotations"] = dict(config.pod_annotations)
    return metadata


def _model(source: ModelSource, image: str, user_env: list[dict]) -> tuple[str, dict, dict | None]:
    """Where the worker finds the model, the volume holding it, and the init container (if
    any) that downloads it."""
    if source.pvc is not None:
        volume = {
            "name": "model",
            "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": True},
        }
        return posixpath.join(MODELS_DIR, source.pvc.path).rstrip("/"), volume, None
    volume = {"name": "model", "emptyDir": {}}
    if source.hf is not None:
        command = [
            "hf", "download", source.hf.repo,
            "--revision", source.hf.revision,
            "--local-dir", DOWNLOAD_DIR,
        ]  # fmt: skip
        env = _scratch_env()
        if source.hf.token_secret is not None:
            secret = {"name": source.hf.token_secret.name, "key": source.hf.token_secret.key}
            env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": secret}})
    else:
        command = ["sh", "-ec", FETCH_URI_SCRIPT]
        env = [
            *_scratch_env(),
            {"name": "MODEL_URI", "value": source.uri},
            {"name": "TARGET", "value": DOWNLOAD_DIR},
        ]
        if source.sha256 is not None:
            env.append({"name": "MODEL_SHA256", "value": source.sha256})
    fetch = {
        "name": "fetch-model",
        "image": image,
        "command": command,
        "env": [*env, *user_env],  # HF_ENDPOINT or a proxy must reach the download too
        "volumeMounts": [
            {"name": "model", "mountPath": MODELS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": container_security(),
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    return DOWNLOAD_DIR, volume, fetch


def drain_seconds(serving: ServingSpec) -> int:
    """What a stopping pod's server gets to finish in-flight requests: the grace period the
    spec grants, less the server's own exit. The pod's grace period adds the preStop sleep."""
    return max(1, serving.termination_grace_period_seconds - EXIT_SECONDS)


def key_volume(name: str, secret: ApiKeySecret) -> dict:
    """A Secret's key as the file `key`, readable by the pod's group (fsGroup) only."""
    return {
        "name": name,
        "secret": {
            "secretName": secret.name,
            "items": [{"key": secret.key, "path": "key"}],
            "defaultMode": 0o440,
        },
    }


def _resources(config: TierConfig) -> dict:
    requests = {"cpu": config.resources.cpu, "memory": config.resources.memory}
    limits = {"memory": config.resources.memory}
    if config.resources.gpus:
        requests[GPU] = limits[GPU] = str(config.resources.gpus)
    return {"requests": requests, "limits": limits}


def http_probe(path: str, period: int, failures: int) -> dict:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _scratch_env() -> list[dict]:
    # The root filesystem is read-only: caches (Hugging Face, Triton, torch) live in /tmp.
    return [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": "/tmp/hf"}]


def pod_security(uid: int) -> dict:
    """Non-root; fsGroup lets that user read the mounted key files (mode 0440)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
