"""spec.gateway: the gateway's objects as the contract with `pagoda gateway` wants them, the
Services that route through it, their removal, and what status says about it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from operator_world import T0, deployment, llmd, pod
from pagoda_gateway.tenants import TenantsFile
from pagoda_operator.api.spec import GatewaySpec, LLMDeploymentSpec
from pagoda_operator.crd import build_crd
from pagoda_operator.gateway import gateway_objects
from pagoda_operator.naming import Owner
from pagoda_operator.network import disruption_budget
from pagoda_operator.observed import World
from pagoda_operator.plan import plan
from pagoda_operator.revision import primary_config
from pagoda_operator.workload import pod_template
from pydantic import ValidationError

OWNER = Owner("team", "demo", "uid-1")
FALLBACK = {
    "model": {"source": {"hf": {"repo": "org/small"}}},
    "resources": {"gpus": 0},
    "promoteAfterSeconds": 10,
    "demoteAfterSeconds": 20,
}
TENANTS = [
    {
        "name": "team-a",
        "apiKeySecret": {"name": "a-keys", "key": "current"},
        "requestsPerMinute": 600,
        "tokensPerMinute": 200000,
        "concurrentRequests": 16,
    },
    {"name": "team-b", "apiKeySecret": {"name": "b-key"}, "requestsPerMinute": 60},
]
GATEWAY = {"tenants": TENANTS, "holdQueue": {"size": 64, "timeoutSeconds": 20}}


def spec(**changes) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate(llmd(**changes)["spec"])


def rendered(**changes) -> dict[str, dict]:
    objects = gateway_objects(OWNER, spec(**changes), "primary")
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def gateway_pod_spec(**changes) -> dict:
    return rendered(**changes)["Deployment/demo-gateway"]["spec"]["template"]["spec"]


def by_name(items: list[dict]) -> dict[str, dict]:
    return {item["name"]: item for item in items}


def objects(result, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in result.apply if o["kind"] == kind}


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def gateway_pod(name: str, **state) -> dict:
    found = pod(name, gpus=0, **state)
    found["metadata"]["labels"] = {"pagoda.dev/gateway": "demo"}
    return found


def test_the_gateway_container_follows_the_gateway_contract():
    pod_spec = gateway_pod_spec(
        gateway=GATEWAY, serving={"port": 8080, "apiKeySecret": {"name": "workers"}}
    )
    [container] = pod_spec["containers"]
    assert container["command"] == ["pagoda"]
    assert container["args"] == [
        "gateway",
        "--host", "0.0.0.0",
        "--port", "8080",
        "--discover", "team/demo",
        "--hold-queue-size", "64",
        "--hold-timeout", "20",
        "--drain-timeout", "55",
        "--tenants", "/etc/pagoda/gateway/tenants.yaml",
        "--backend-api-key-file", "/etc/pagoda/api-key/key",
    ]  # fmt: skip
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["image"] == "pagoda-operator:0.1.0", "the slim image: no torch needed"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "512Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    security = pod_spec["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 65532
    assert security["fsGroup"] == 65532, "the key files (0440) are readable by the pod's group"
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["serviceAccountName"] == "demo-gateway"
    assert pod_spec["automountServiceAccountToken"] is True
    assert "nodeSelector" not in pod_spec and "tolerations" not in pod_spec


@pytest.mark.parametrize("grace_seconds", [5, 15, 60])
def test_the_gateway_drains_within_its_grace_period_as_long_as_the_workers(grace_seconds):
    serving = {"terminationGracePeriodSeconds": grace_seconds}
    pod_spec = gateway_pod_spec(gateway=GATEWAY, serving=serving)
    [container] = pod_spec["containers"]
    drain = int(container["args"][container["args"].index("--drain-timeout") + 1])
    prestop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert prestop > 0, "endpoints drop the pod before it stops taking requests"
    assert drain < pod_spec["terminationGracePeriodSeconds"] - prestop, "never killed mid-drain"
    worker = pod_template(OWNER, primary_config(spec(serving=serving)))
    assert (
        pod_spec["terminationGracePeriodSeconds"] == worker["spec"]["terminationGracePeriodSeconds"]
    )


def test_tenant_keys_and_the_backend_key_are_mounted_files_never_values():
    pod_spec = gateway_pod_spec(gateway=GATEWAY, serving={"apiKeySecret": {"name": "workers"}})
    [container] = pod_spec["containers"]
    assert "env" not in container, "no key travels in the environment"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = by_name(pod_spec["volumes"])
    for path, secret, key in [
        ("/etc/pagoda/tenant-keys/team-a", "a-keys", "current"),
        ("/etc/pagoda/tenant-keys/team-b", "b-key", "key"),
        ("/etc/pagoda/api-key", "workers", "key"),
    ]:
        assert mounts[path]["readOnly"] is True
        assert volumes[mounts[path]["name"]]["secret"] == {
            "secretName": secret,
            "items": [{"key": key, "path": "key"}],
            "defaultMode": 0o440,
        }
    tenants = volumes[mounts["/etc/pagoda/gateway"]["name"]]
    assert tenants["configMap"]["name"] == "demo-gateway"
    assert volumes[mounts["/tmp"]["name"]] == {"name": "tmp", "emptyDir": {}}


def test_the_tenants_file_is_camel_case_and_leaves_unset_limits_out():
    text = rendered(gateway=GATEWAY)["ConfigMap/demo-gateway"]["data"]["tenants.yaml"]
    assert yaml.safe_load(text) == {
        "tenants": [
            {
                "name": "team-a",
                "keyFile": "/etc/pagoda/tenant-keys/team-a/key",
                "requestsPerMinute": 600,
                "tokensPerMinute": 200000,
                "concurrentRequests": 16,
            },
            {
                "name": "team-b",
                "keyFile": "/etc/pagoda/tenant-keys/team-b/key",
                "requestsPerMinute": 60,
            },
        ]
    }


def tenants_file(**changes) -> dict:
    return yaml.safe_load(rendered(**changes)["ConfigMap/demo-gateway"]["data"]["tenants.yaml"])


def test_without_tenants_the_workers_key_stays_the_clients_key():
    """A gateway added to a deployment with a key must not open it: the gateway checks the
    same key, from the file the workers' key is already mounted at."""
    workers_key = {"apiKeySecret": {"name": "workers", "key": "token"}}
    found = tenants_file(gateway={}, serving=workers_key)
    assert found == {"tenants": [{"name": "default", "keyFile": "/etc/pagoda/api-key/key"}]}
    TenantsFile.model_validate(found)  # as `pagoda gateway --tenants` reads it
    pod_spec = gateway_pod_spec(gateway={}, serving=workers_key)
    [container] = pod_spec["containers"]
    args = container["args"]
    assert args[args.index("--tenants") + 1] == "/etc/pagoda/gateway/tenants.yaml"
    assert args[args.index("--backend-api-key-file") + 1] == "/etc/pagoda/api-key/key"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = by_name(pod_spec["volumes"])
    key_dir, key_name = found["tenants"][0]["keyFile"].rsplit("/", 1)
    secret = volumes[mounts[key_dir]]["secret"]
    assert secret["secretName"] == "workers"
    assert secret["items"] == [{"key": "token", "path": key_name}]
    assert volumes[mounts["/etc/pagoda/gateway"]]["configMap"]["name"] == "demo-gateway"


def test_with_tenants_only_their_keys_let_clients_in():
    found = tenants_file(gateway=GATEWAY, serving={"apiKeySecret": {"name": "workers"}})
    assert [t["name"] for t in found["tenants"]] == ["team-a", "team-b"]
    assert "/etc/pagoda/api-key/key" not in [t["keyFile"] for t in found["tenants"]]
    TenantsFile.model_validate(found)


def test_without_tenants_or_a_worker_key_the_gateway_gets_neither_flag_nor_volume():
    pod_spec = gateway_pod_spec(gateway={})
    [container] = pod_spec["containers"]
    assert "--tenants" not in container["args"]
    assert "--backend-api-key-file" not in container["args"]
    assert [v["name"] for v in pod_spec["volumes"]] == ["tmp"]
    hold = container["args"][container["args"].index("--hold-queue-size") :]
    assert hold[:4] == ["--hold-queue-size", "256", "--hold-timeout", "30"], "the defaults"


def test_a_tenant_change_rolls_the_gateway_pods_under_the_same_config_map_name():
    def tenants_hash(gateway: dict) -> str:
        template = rendered(gateway=gateway)["Deployment/demo-gateway"]["spec"]["template"]
        return template["metadata"]["annotations"]["pagoda.dev/tenants-sha256"]

    raised = [{**TENANTS[0], "requestsPerMinute": 1200}, TENANTS[1]]
    assert tenants_hash(GATEWAY) != tenants_hash({**GATEWAY, "tenants": raised})
    assert tenants_hash(GATEWAY) == tenants_hash({**GATEWAY, "replicas": 5})
    assert "ConfigMap/demo-gateway" in rendered(gateway={**GATEWAY, "tenants": raised})
    assert "immutable" not in rendered(gateway=GATEWAY)["ConfigMap/demo-gateway"]


def test_gateway_pods_are_not_worker_pods():
    found = rendered(gateway=GATEWAY)["Deployment/demo-gateway"]
    labels = found["spec"]["template"]["metadata"]["labels"]
    assert "pagoda.dev/deployment" not in labels, "not in the PDB, GPU accounting or pod health"
    assert labels["pagoda.dev/gateway"] == "demo"
    assert labels["app.kubernetes.io/name"] == "pagoda-gateway"
    assert found["spec"]["selector"] == {"matchLabels": {"pagoda.dev/gateway": "demo"}}
    pdb = disruption_budget(OWNER)["spec"]["selector"]["matchLabels"]
    assert not pdb.items() <= labels.items()
    # their own budget: a drain takes one gateway pod at a time, and only gateway pods
    budget = rendered(gateway=GATEWAY)["PodDisruptionBudget/demo-gateway"]["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["selector"]["matchLabels"] == found["spec"]["selector"]["matchLabels"]
    # The Deployment itself carries the owner's label: the operator's watch finds it.
    assert found["metadata"]["labels"]["pagoda.dev/deployment"] == "demo"
    assert found["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pagoda-operator"


def test_the_gateway_rolls_one_extra_pod_at_a_time_and_never_drops_below_replicas():
    found = rendered(gateway={**GATEWAY, "replicas": 3})["Deployment/demo-gateway"]["spec"]
    assert found["replicas"] == 3
    assert found["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_the_gateway_may_read_endpointslices_and_nothing_else():
    found = rendered(gateway=GATEWAY)
    assert found["Role/demo-gateway"]["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = found["RoleBinding/demo-gateway"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "demo-gateway",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "demo-gateway", "namespace": "team"}
    ]
    assert "ServiceAccount/demo-gateway" in found


def test_headless_tier_services_publish_only_ready_pods_on_the_http_port():
    service = rendered(gateway=GATEWAY, serving={"port": 8080})["Service/demo-active"]["spec"]
    assert service["clusterIP"] == "None"
    assert service["publishNotReadyAddresses"] is False
    assert service["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]


def test_without_a_fallback_there_is_no_standby_service():
    assert "Service/demo-standby" not in rendered(gateway=GATEWAY)
    assert "Service/demo-standby" in rendered(gateway=GATEWAY, fallback=FALLBACK)


def test_with_a_gateway_the_service_selects_it_and_the_tier_services_swap_on_promotion():
    resource = llmd(gateway=GATEWAY, fallback=FALLBACK)
    revision = primary_config(spec(gateway=GATEWAY, fallback=FALLBACK)).revision
    down = {
        "primary": deployment(revision=revision, ready=0),
        "fallback": deployment("fallback", revision="f", wanted=1, ready=1),
    }
    up = {**down, "primary": deployment(revision=revision)}

    gateway = deployment("gateway", wanted=2, ready=2)

    def step(resource: dict, deployments: dict, second: int) -> tuple[dict, dict]:
        now = T0 + timedelta(seconds=second)
        result = plan(World(resource, deployments=deployments, gateway=gateway, now=now))
        selectors = {
            name: service["spec"]["selector"]
            for name, service in objects(result, "Service").items()
        }
        return {**resource, "status": result.status}, selectors

    def tiers(selectors: dict) -> tuple[str, ...]:
        return tuple(selectors[f"demo-{role}"]["pagoda.dev/tier"] for role in ("active", "standby"))

    resource, selectors = step(resource, down, 0)
    assert selectors["demo"] == {"pagoda.dev/gateway": "demo"}, "clients go through the gateway"
    assert tiers(selectors) == ("primary", "fallback")
    for name in ("demo-active", "demo-standby"):
        assert selectors[name]["pagoda.dev/deployment"] == "demo"
    resource, selectors = step(resource, down, 10)
    assert resource["status"]["activeTier"] == "fallback"
    assert tiers(selectors) == ("fallback", "primary")
    assert selectors["demo"] == {"pagoda.dev/gateway": "demo"}
    resource, selectors = step(resource, up, 15)  # back, for demoteAfterSeconds from now
    assert tiers(selectors) == ("fallback", "primary")
    resource, selectors = step(resource, up, 35)
    assert tiers(selectors) == ("primary", "fallback")


def test_the_gateway_objects_come_before_the_service_that_sends_clients_to_them():
    result = plan(World(llmd(gateway=GATEWAY), now=T0))
    names = [f"{o['kind']}/{o['metadata']['name']}" for o in result.apply]
    gateway = names[names.index("ConfigMap/demo-gateway") : names.index("Service/demo")]
    assert gateway == [
        "ConfigMap/demo-gateway",
        "ServiceAccount/demo-gateway",
        "Role/demo-gateway",
        "RoleBinding/demo-gateway",
        "Service/demo-active",
        "PodDisruptionBudget/demo-gateway",
        "Deployment/demo-gateway",
    ]
    assert result.delete == []


def gateway_leftovers(owner_uid: str = "uid-1") -> World:
    """A world where spec.gateway was just removed: its Deployment and ConfigMap remain."""
    world_before = plan(World(llmd(gateway=GATEWAY), now=T0))
    config_map = objects(world_before, "ConfigMap")["demo-gateway"]
    config_map["metadata"]["ownerReferences"][0]["uid"] = owner_uid
    gateway = deployment("gateway", wanted=2, ready=2)
    gateway["metadata"]["ownerReferences"][0]["uid"] = owner_uid
    return World(llmd(), gateway=gateway, config_maps=[config_map], now=T0)


def test_removing_the_gateway_deletes_its_objects_and_the_service_selects_the_tier_again():
    result = plan(gateway_leftovers())
    assert [(ref["kind"], ref["name"]) for ref in result.delete] == [
        ("ConfigMap", "demo-gateway"),
        ("ServiceAccount", "demo-gateway"),
        ("RoleBinding", "demo-gateway"),
        ("Role", "demo-gateway"),
        ("Service", "demo-active"),
        ("Service", "demo-standby"),
        ("PodDisruptionBudget", "demo-gateway"),
        ("Deployment", "demo-gateway"),  # last: while it stays, the next pass deletes again
    ]
    assert objects(result, "Service")["demo"]["spec"]["selector"] == {
        "pagoda.dev/deployment": "demo",
        "pagoda.dev/tier": "primary",
    }
    assert result.status["gatewayReplicas"] == 0
    assert conditions(result.status)["GatewayReady"]["reason"] == "NoGateway"


def test_a_half_removed_gateway_is_still_cleaned_up():
    """Its Deployment was never created (or is gone) but its ConfigMap is there: the rest may
    be too."""
    world = gateway_leftovers()
    result = plan(World(**{**world.__dict__, "gateway": None}))
    assert ("Role", "demo-gateway") in [(ref["kind"], ref["name"]) for ref in result.delete]


def test_a_look_alike_gateway_of_another_owner_is_not_deleted():
    assert plan(World(**{**gateway_leftovers().__dict__, "config_maps": []})).delete != []
    theirs = gateway_leftovers(owner_uid="someone-else")
    assert plan(World(**{**theirs.__dict__, "config_maps": []})).delete == []


def test_removing_the_fallback_deletes_the_standby_service_the_gateway_keeps_the_rest():
    world = World(llmd(gateway=GATEWAY), deployments={"fallback": deployment("fallback")}, now=T0)
    assert [(ref["kind"], ref["name"]) for ref in plan(world).delete] == [
        ("Service", "demo-standby"),
        ("Deployment", "demo-fallback"),
    ]


def ready_world(
    gateway_ready: int, gateway_pods: list[dict] = (), gateway: dict | None = GATEWAY
) -> World:
    """Two ready workers, and the gateway Deployment with `gateway_ready` ready pods (none
    without spec.gateway)."""
    revision = primary_config(spec(gateway=gateway)).revision
    return World(
        llmd(gateway=gateway),
        deployments={"primary": deployment(revision=revision)},
        pods=[pod("p1"), pod("p2")],
        gateway=deployment("gateway", wanted=2, ready=gateway_ready) if gateway else None,
        gateway_pods=list(gateway_pods),
        now=T0,
    )


def replanned(world: World, previous: dict) -> World:
    """The same world, its LLMDeployment carrying the status an earlier pass wrote."""
    return World(**{**world.__dict__, "resource": {**world.resource, "status": previous}})


def service_selector(result) -> dict:
    return objects(result, "Service")["demo"]["spec"]["selector"]


WORKERS = {"pagoda.dev/deployment": "demo", "pagoda.dev/tier": "primary"}
GATEWAY_PODS = {"pagoda.dev/gateway": "demo"}
STARTING = [gateway_pod("g1", phase="Pending", ready=False, started=False)]


def test_a_gateway_turned_on_takes_the_service_only_once_a_gateway_pod_is_ready():
    serving = plan(ready_world(gateway_ready=0, gateway=None))
    assert serving.status["serviceTarget"] == "workers"
    starting = plan(replanned(ready_world(gateway_ready=0, gateway_pods=STARTING), serving.status))
    assert service_selector(starting) == WORKERS, "the workers serve until a gateway pod is ready"
    assert starting.status["serviceTarget"] == "workers"
    found = conditions(starting.status)
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "Serving")
    assert found["Ready"]["message"].endswith("; directly, until a gateway pod is ready")
    gateway = found["GatewayReady"]
    assert (gateway["status"], gateway["reason"]) == ("False", "NoReadyPods")
    assert "the Service sends clients to the workers directly until one is" in gateway["message"]
    assert "0/2" in gateway["message"] and "pagoda.dev/gateway=demo" in gateway["message"]

    switched = plan(replanned(ready_world(gateway_ready=1), starting.status))
    assert service_selector(switched) == GATEWAY_PODS
    assert switched.status["serviceTarget"] == "gateway"
    assert conditions(switched.status)["Ready"]["message"].endswith("through 1 ready gateway pod")


def test_the_service_never_falls_back_to_the_workers_once_it_went_through_the_gateway():
    switched = plan(ready_world(gateway_ready=2))
    lost = plan(replanned(ready_world(gateway_ready=0, gateway_pods=STARTING), switched.status))
    assert service_selector(lost) == GATEWAY_PODS, "the workers would bypass the tenants' keys"
    assert lost.status["serviceTarget"] == "gateway"
    found = conditions(lost.status)
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "GatewayNotReady")
    assert "all traffic goes through the gateway" in found["Ready"]["message"]
    assert "2/2 primary pods ready" in found["Ready"]["message"]
    gateway = found["GatewayReady"]
    assert "all traffic goes through the gateway, so nothing is served" in gateway["message"]
    assert lost.status["phase"] == "Pending", "starting, nothing wrong yet"
    # A spec change (more tenants, more replicas) keeps the Service where it is.
    grown = ready_world(gateway_ready=0, gateway={**GATEWAY, "replicas": 3})
    assert service_selector(plan(replanned(grown, lost.status))) == GATEWAY_PODS


def test_removing_the_gateway_turns_the_service_back_to_the_workers_at_once_and_forgets():
    switched = plan(ready_world(gateway_ready=2))
    removed = plan(replanned(gateway_leftovers(), switched.status))
    assert service_selector(removed) == WORKERS
    assert removed.status["serviceTarget"] == "workers"
    # Turned on again, it waits for a ready gateway pod again.
    again = plan(replanned(ready_world(gateway_ready=0, gateway_pods=STARTING), removed.status))
    assert service_selector(again) == WORKERS


def test_losing_the_last_ready_gateway_pod_is_a_warning():
    served = plan(ready_world(gateway_ready=2))
    world = ready_world(gateway_ready=0)
    lost = plan(
        World(**{**world.__dict__, "resource": {**world.resource, "status": served.status}})
    )
    warnings = [(t.type, t.reason) for t in lost.transitions if t.warning]
    assert warnings == [("Ready", "GatewayNotReady"), ("GatewayReady", "NoReadyPods")]


def test_a_broken_gateway_pod_names_its_problem_and_degrades_the_phase():
    broken = gateway_pod("demo-gateway-x", ready=False, waiting="ImagePullBackOff")
    result = plan(ready_world(gateway_ready=0, gateway_pods=[broken]))
    gateway = conditions(result.status)["GatewayReady"]
    assert gateway["reason"] == "ImagePullBackOff"
    assert "pod demo-gateway-x cannot pull the image" in gateway["message"]
    assert result.status["phase"] == "Degraded"
    assert conditions(result.status)["Degraded"]["status"] == "False", "workers are fine"


def test_gateway_pods_that_cannot_be_created_say_why():
    world = ready_world(gateway_ready=0)
    failing = deployment("gateway", ready=0, replicas=0, replica_failure="exceeded quota: pods")
    result = plan(World(**{**world.__dict__, "gateway": failing}))
    gateway = conditions(result.status)["GatewayReady"]
    assert gateway["reason"] == "FailedCreate"
    assert "cannot create gateway pods: exceeded quota: pods" in gateway["message"]


def test_a_ready_gateway_serves_and_status_counts_its_pods():
    result = plan(ready_world(gateway_ready=2))
    found = conditions(result.status)
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "Serving")
    assert found["Ready"]["message"].endswith("through 2 ready gateway pods")
    gateway = found["GatewayReady"]
    assert (gateway["status"], gateway["reason"]) == ("True", "Serving")
    assert "each enforces 1/2 of every tenant limit" in gateway["message"]
    assert result.status["gatewayReplicas"] == 2
    assert result.status["gatewayReadyReplicas"] == 2
    assert result.status["endpoint"] == "http://demo.team.svc:8000/v1"


def test_without_a_gateway_status_says_so_quietly():
    result = plan(World(llmd(), now=T0))
    gateway = conditions(result.status)["GatewayReady"]
    assert (gateway["status"], gateway["reason"]) == ("False", "NoGateway")
    assert result.status["gatewayReplicas"] == result.status["gatewayReadyReplicas"] == 0
    assert "GatewayReady" not in [t.type for t in result.transitions]
    # Removing a gateway that served is announced, but not as a warning.
    served = plan(ready_world(gateway_ready=2))
    removed = plan(World(llmd(status=served.status), now=T0))
    [transition] = [t for t in removed.transitions if t.type == "GatewayReady"]
    assert transition.reason == "NoGateway" and not transition.warning


def test_duplicate_tenant_names_are_refused_by_the_model_and_by_a_cel_rule():
    with pytest.raises(ValidationError, match="unique names: team-a appears twice"):
        GatewaySpec.model_validate({"tenants": [TENANTS[0], {**TENANTS[1], "name": "team-a"}]})
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    gateway = schema["properties"]["spec"]["properties"]["gateway"]
    [rule] = gateway["x-kubernetes-validations"]
    assert "exists_one" in rule["rule"]
    assert rule["message"] == "gateway.tenants must have unique names"
    assert rule["fieldPath"] == ".tenants"
    assert gateway["properties"]["tenants"]["maxItems"] == 64


@pytest.mark.parametrize(
    "gateway",
    [
        {"replicas": 0},
        {"replicas": 17},
        {"holdQueue": {"size": 100001}},
        {"holdQueue": {"timeoutSeconds": 0}},
        {"tenants": [{**TENANTS[1], "name": "Team_B"}]},
        {"tenants": [{**TENANTS[1], "requestsPerMinute": 0}]},
        {"tenants": [{"name": "team-c"}]},  # no key: every tenant is known by one
        {"tenants": [TENANTS[1]] * 65},
    ],
)
def test_gateway_bounds(gateway):
    with pytest.raises(ValidationError):
        GatewaySpec.model_validate(gateway)
