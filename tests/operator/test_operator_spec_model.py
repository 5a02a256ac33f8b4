"""The spec models reject what the CRD rejects, with the same words."""

from __future__ import annotations

import pytest
from pagoda_operator.api import LLMDeploymentSpec
from pydantic import ValidationError

PVC = {"pvc": {"claimName": "models"}}


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
