"""The CRD is generated from the pydantic models and stays structural and self-documenting."""

from __future__ import annotations

import pytest
import yaml
from pagoda_operator.api.env import OPERATOR_ENV
from pagoda_operator.api.formats import C_IDENTIFIER
from pagoda_operator.crd import CRD_PATH, build_crd, main, render_crd


def _schema() -> dict:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict, path: str = ""):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_the_models():
    assert CRD_PATH.read_text() == render_crd(), "run: python -m pagoda_operator.crd"
    assert main(["--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path, monkeypatch):
    stale = tmp_path / "crd.yaml"
    stale.write_text(render_crd().replace("maxSurge", "maxSurges"))
    monkeypatch.setattr("pagoda_operator.crd.CRD_PATH", stale)
    assert main(["--check"]) == 1


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        assert "type" in node, f"{path} has no type"
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            assert banned not in node, f"{path} has {banned}"
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: {bound} must be boolean in OpenAPI v3"


def test_every_spec_and_status_field_is_described():
    root = _schema()
    for top in ("spec", "status"):
        for path, node in _walk(root["properties"][top], top):
            if not path.endswith("{}"):  # map values are described by their map
                assert node.get("description"), f"{path} has no description (kubectl explain)"


def test_nested_objects_default_to_their_full_defaults():
    """The apiserver validates a default against CEL rules as written, so it must be whole."""
    spec = _schema()["properties"]["spec"]["properties"]
    assert spec["rollout"]["default"] == {
        "maxSurge": 1,
        "maxUnavailable": 0,
        "progressDeadlineSeconds": 1800,
        "minReadySeconds": 30,
    }
    assert spec["engine"]["default"]["tensorParallelSize"] == 1
    assert "maxModelLen" not in spec["engine"]["default"], "unset stays absent, not null"
    assert spec["resources"]["default"]["gpus"] == 1
    assert spec["serving"]["default"]["port"] == 8000
    assert "default" not in spec["fallback"]  # optional: absent means no fallback tier
    utilization = spec["engine"]["properties"]["gpuMemoryUtilization"]
    assert utilization["minimum"] == 0 and utilization["exclusiveMinimum"] is True


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "self.metadata.name"),
        (".spec", "minPrimaryReady"),
        (".spec.rollout", "self.maxSurge > 0 || self.maxUnavailable > 0"),
        (".spec.model.source", "has(self.pvc), has(self.hf), has(self.uri)"),
        (".spec.fallback", "demoteAfterSeconds >= self.promoteAfterSeconds"),
        (".spec.fallback.model.source", "has(self.pvc), has(self.hf), has(self.uri)"),
        (".spec.model.source", "!has(self.sha256) || has(self.uri)"),
        (".spec.fallback.model.source", "!has(self.sha256) || has(self.uri)"),
        (".spec.env[]", "has(self.value) != has(self.valueFrom)"),
        (".spec.env[].valueFrom", "has(self.secretKeyRef) != has(self.configMapKeyRef)"),
        (".spec.gateway", "self.tenants.exists_one(u, u.name == t.name)"),
    ],
)
def test_cross_field_rules_are_cel(path, fragment):
    nodes = dict(_walk(_schema()))
    rules = [rule["rule"] for rule in nodes[path].get("x-kubernetes-validations", [])]
    assert any(fragment in rule for rule in rules), rules


@pytest.mark.parametrize(("path", "tier"), [(".spec", ""), (".spec.fallback", "fallback.")])
def test_fp8_weights_need_gpus_on_both_tiers(path, tier):
    nodes = dict(_walk(_schema()))
    rules = nodes[path]["x-kubernetes-validations"]
    [rule] = [r for r in rules if "quantization" in r["rule"]]
    assert rule == {
        "rule": "self.engine.quantization != 'fp8' || self.resources.gpus >= 1",
        "message": f"{tier}engine.quantization fp8 runs on GPUs only (compute capability 8.9 or"
        f" later): set {tier}resources.gpus, or quantization none",
        "fieldPath": ".engine.quantization",
    }
    assert not any("kvCacheDtype" in r["rule"] for r in rules), "an FP8 KV cache runs on CPU too"


@pytest.mark.parametrize(("path", "tier"), [(".spec", ""), (".spec.fallback", "fallback.")])
def test_tensor_parallelism_takes_all_the_pods_gpus_on_both_tiers(path, tier):
    """Evaluated by a real apiserver in e2e/test_operator_failures.py."""
    rules = dict(_walk(_schema()))[path]["x-kubernetes-validations"]
    [rule] = [r for r in rules if "tensorParallelSize" in r["rule"]]
    assert rule == {
        "rule": "self.engine.tensorParallelSize"
        " == (self.resources.gpus == 0 ? 1 : self.resources.gpus)",
        "message": f"{tier}engine.tensorParallelSize must equal {tier}resources.gpus (a worker"
        f" splits its model across all its GPUs), and be 1 when {tier}resources.gpus is 0",
        "fieldPath": ".engine.tensorParallelSize",
    }


@pytest.mark.parametrize("path", [".spec.engine", ".spec.fallback.engine"])
def test_fp8_settings_are_off_by_default(path):
    engine = dict(_walk(_schema()))[path]["properties"]
    assert (engine["quantization"]["enum"], engine["quantization"]["default"]) == (
        ["none", "fp8"],
        "none",
    )
    assert (engine["kvCacheDtype"]["enum"], engine["kvCacheDtype"]["default"]) == (
        ["auto", "fp8"],
        "auto",
    )


def test_env_is_a_list_map_of_c_identifiers_without_the_operators_names():
    env = _schema()["properties"]["spec"]["properties"]["env"]
    assert env["x-kubernetes-list-type"] == "map", "the apiserver refuses a repeated name"
    assert env["x-kubernetes-list-map-keys"] == ["name"]
    assert env["maxItems"] == 64
    assert "default" not in env, "unset stays absent"
    item = env["items"]
    assert item["required"] == ["name"]
    assert item["properties"]["name"]["pattern"] == C_IDENTIFIER
    [reserved] = [r for r in item["x-kubernetes-validations"] if "self.name in" in r["rule"]]
    assert reserved["fieldPath"] == ".name"
    assert reserved["message"].startswith("spec.env cannot set")
    for name in OPERATOR_ENV:
        assert f"'{name}'" in reserved["rule"] and name in reserved["message"]


def test_the_checksum_is_64_lowercase_hex_digits():
    source = _schema()["properties"]["spec"]["properties"]["model"]["properties"]["source"]
    assert source["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"


def test_printer_columns_and_subresources():
    version = build_crd()["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Tier", "Model", "GPUs", "Age"} <= columns.keys()
    assert columns["Tier"] == ".status.activeTier"
    scale = version["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.replicas"
    assert scale["labelSelectorPath"] == ".status.selector"
    assert version["subresources"]["status"] == {}


def test_conditions_merge_by_type():
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_yaml_has_no_anchors():
    text = CRD_PATH.read_text()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text)["metadata"]["name"] == "llmdeployments.pagoda.dev"
