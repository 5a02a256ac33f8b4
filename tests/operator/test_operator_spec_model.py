"""The spec models reject what the CRD rejects, with the same words."""

from __future__ import annotations

import pytest
from pagoda_operator.api import LLMDeploymentSpec
from pydantic import ValidationError

PVC = {"pvc": {"claimName": "models"}}
URI = {"uri": "https://models.example/m.tar.gz"}
SHA = "0123456789abcdef" * 4
SECRET = {"secretKeyRef": {"name": "proxy", "key": "url"}}
CONFIG_MAP = {"configMapKeyRef": {"name": "mirror", "key": "endpoint"}}


def parse(**changes):
    return LLMDeploymentSpec.model_validate({"model": {"name": "m", "source": PVC}} | changes)


def test_defaults():
    spec = parse()
    assert spec.replicas == 1
    assert spec.resources.gpus == 1
    assert (spec.rollout.max_surge, spec.rollout.max_unavailable) == (1, 0)
    assert spec.engine.tensor_parallel_size == 1
    assert spec.serving.port == 8000
    assert spec.fallback is None


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"model": {"name": "m", "source": {}}}, "exactly one model source"),
        ({"model": {"name": "m", "source": PVC | {"uri": "https://x/m.tar"}}}, "exactly one"),
        ({"replicas": -1}, "greater than or equal to 0"),
        ({"engine": {"gpuMemoryUtilization": 0}}, "greater than 0"),
        ({"engine": {"dtype": "int4"}}, "auto"),
        ({"model": {"name": "m", "source": {"uri": "ftp://x/m.tar"}}}, "pattern"),
        # What the children's validation would reject later, rejected up front.
        ({"resources": {"gpus": 9}}, "less than or equal to 8"),  # one engine's, one node's
        ({"resources": {"cpu": "1.2.3"}}, "pattern"),
        ({"resources": {"memory": "1..5Gi"}}, "pattern"),
        ({"resources": {"memory": "-1Gi"}}, "pattern"),
        ({"resources": {"nodeSelector": {"gpu type": "a100"}}}, "valid label/annotation key"),
        ({"resources": {"nodeSelector": {"gpu": "a100 80g"}}}, "pattern"),
        ({"resources": {"nodeSelector": {"gpu": "x" * 64}}}, "at most 63"),
        ({"resources": {"tolerations": [{"key": "bad key", "operator": "Exists"}]}}, "pattern"),
        ({"resources": {"tolerations": [{"key": "k", "value": "a b"}]}}, "pattern"),
        ({"resources": {"tolerations": [{"value": "v"}]}}, "empty key must use operator Exists"),
        ({"resources": {"tolerations": [{"key": "k", "tolerationSeconds": 5}]}}, "NoExecute"),
        ({"podAnnotations": {"not/a/key": "v"}}, "valid label/annotation key"),
        ({"image": "registry.local/pagoda worker:1"}, "pattern"),
        ({"image": "Pagoda:1"}, "pattern"),
        ({"rollout": {"progressDeadlineSeconds": 30}}, "minReadySeconds must be less than"),
        ({"model": {"name": "m", "source": PVC | {"sha256": SHA}}}, "only allowed with source.uri"),
        ({"model": {"name": "m", "source": URI | {"sha256": SHA.upper()}}}, "pattern"),
        ({"model": {"name": "m", "source": URI | {"sha256": SHA[:63]}}}, "pattern"),
        ({"env": [{"name": "1ST", "value": "x"}]}, "pattern"),
        ({"env": [{"name": "A-B", "value": "x"}]}, "pattern"),
        ({"env": [{"name": "HF_HOME", "value": "/data"}]}, "spec.env cannot set HOME, HF_HOME"),
        ({"env": [{"name": "TARGET", "value": "/x"}]}, "the operator sets them"),
        ({"env": [{"name": "A"}]}, "exactly one of value or valueFrom"),
        ({"env": [{"name": "A", "value": "1", "valueFrom": SECRET}]}, "exactly one of value or"),
        ({"env": [{"name": "A", "valueFrom": {}}]}, "exactly one of secretKeyRef or configMap"),
        ({"env": [{"name": "A", "valueFrom": SECRET | CONFIG_MAP}]}, "exactly one of secretKey"),
        (
            {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad", "key": "k"}}}]},
            "pattern",
        ),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "sets A twice"),
        ({"env": [{"name": f"V{i}", "value": ""} for i in range(65)]}, "at most 64"),
    ],
)
def test_invalid_specs(changes, says):
    with pytest.raises(ValidationError, match=says):
        parse(**changes)


def test_camel_case_aliases_round_trip():
    spec = parse(rollout={"maxSurge": 2, "progressDeadlineSeconds": 60})
    dumped = spec.model_dump(by_alias=True)
    assert dumped["rollout"]["maxSurge"] == 2
    assert LLMDeploymentSpec.model_validate(dumped) == spec


@pytest.mark.parametrize(
    "image",
    [
        "pagoda-worker:0.1.0",
        "localhost:5000/pagoda/worker",
        "ghcr.io/org/pagoda_worker:v1.2-rc.1",
        "worker@sha256:" + "a" * 64,
        "registry.example.com:443/a/b/c:tag@sha256:" + "0" * 64,
    ],
)
def test_image_references_that_runtimes_accept(image):
    assert parse(image=image).image == image


def test_valid_keys_values_and_quantities():
    spec = parse(
        resources={
            "cpu": "500m",
            "memory": "1.5Gi",
            "nodeSelector": {"nvidia.com/gpu.product": "A100-SXM4-80GB", "zone": ""},
            "tolerations": [
                {"operator": "Exists"},
                {"key": "k", "effect": "NoExecute", "tolerationSeconds": 5},
            ],
        },
        podAnnotations={"prometheus.io/scrape": "true"},
    )
    assert spec.resources.memory == "1.5Gi"


def test_env_and_checksum():
    env = [
        {"name": "HF_ENDPOINT", "value": "http://mirror.local"},
        {"name": "EMPTY", "value": ""},
        {"name": "_PROXY", "valueFrom": SECRET},
        {"name": "nccl_debug", "valueFrom": CONFIG_MAP},
    ]
    spec = parse(model={"name": "m", "source": URI | {"sha256": SHA}}, env=env)
    assert spec.model.source.sha256 == SHA
    assert [variable.container_env() for variable in spec.env] == env
