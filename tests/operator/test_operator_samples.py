"""The samples a platform team copies are valid LLMDeployments and bring what they reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pagoda_operator.api.spec import LLMDeploymentSpec

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((SAMPLES / name).read_text()) if doc]


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_every_sample_llmdeployment_is_valid(name):
    found = [doc for doc in documents(name) if doc["kind"] == "LLMDeployment"]
    assert found, f"{name} has no LLMDeployment"
    for doc in found:
        LLMDeploymentSpec.model_validate(doc["spec"])


def test_the_gateway_sample_gives_two_tenants_different_limits_and_their_secrets():
    docs = documents("gateway-tenants.yaml")
    [llmd] = [doc for doc in docs if doc["kind"] == "LLMDeployment"]
    tenants = LLMDeploymentSpec.model_validate(llmd["spec"]).gateway.tenants
    assert len(tenants) == 2
    limits = {(t.requests_per_minute, t.tokens_per_minute, t.concurrent_requests) for t in tenants}
    assert len(limits) == 2, "the two tenants' limits differ"
    secrets = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Secret"}
    for tenant in tenants:
        key = secrets[tenant.api_key_secret.name]["stringData"][tenant.api_key_secret.key]
        assert key.startswith("example-"), "sample keys say they are examples"
