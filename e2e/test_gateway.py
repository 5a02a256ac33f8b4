"""spec.gateway on a real apiserver: the gateway's objects, its least privilege, the Service that
sends clients through it, and their removal. The operator runs with exactly the permissions
manifests/rbac.yaml grants (it must hold what it grants the gateway's Role).

KWOK's gateway pods only pretend to run `pagoda gateway`; e2e/node sends real requests.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from e2e.faults import Fault
from e2e.operator_support import (
    REPO,
    install_crds,
    llmdeployment,
    models_volume,
    patch_spec,
    remove_crds,
    running_operator,
    status,
    wait_condition,
)

SAMPLE = REPO / "manifests" / "samples" / "gateway-tenants.yaml"
# The operator's own ServiceAccount and ClusterRole, without its Deployment.
RBAC = [str(REPO / "manifests" / name) for name in ("namespace.yaml", "rbac.yaml")]
GATEWAY_KINDS = (
    "deployments,services,serviceaccounts,roles,rolebindings,configmaps,poddisruptionbudgets"
)
WORKERS = {"pagoda.dev/deployment": "live", "pagoda.dev/tier": "primary"}
GATEWAY_PODS = {"pagoda.dev/gateway": "live"}


@pytest.fixture(scope="module")
def installed_operator(cluster, tmp_path_factory):
    """`pagoda operator` authenticated as the ServiceAccount manifests/rbac.yaml sets up."""
    install_crds(cluster)
    cluster.kubectl("apply", *(f"-f={path}" for path in RBAC))
    workdir = tmp_path_factory.mktemp("gateway-operator")
    kubeconfig = cluster.service_account_kubeconfig(
        "pagoda-operator", "pagoda-system", workdir / "operator.kubeconfig"
    )
    with running_operator(cluster, workdir, "--standalone", kubeconfig=kubeconfig) as operator:
        yield operator
    cluster.kubectl("delete", "--ignore-not-found", "--timeout=120s", *(f"-f={p}" for p in RBAC))
    remove_crds(cluster)


def gateway_objects(cluster, namespace: str, name: str) -> dict[str, dict]:
    """The objects of one LLMDeployment's gateway, by kind/name."""
    listing = cluster.kubectl("get", GATEWAY_KINDS, f"-n={namespace}", "-o=json")
    found = json.loads(listing.stdout)["items"]
    mine = {f"{name}-gateway", f"{name}-active", f"{name}-standby"}
    return {
        f"{o['kind']}/{o['metadata']['name']}": o for o in found if o["metadata"]["name"] in mine
    }


def endpoint_pods(cluster, namespace: str, service: str) -> set[str]:
    """Pods behind a Service, as the endpoint slice controller (and the gateway) see them."""
    listing = cluster.kubectl(
        "get", "endpointslices", f"-n={namespace}", f"-l=kubernetes.io/service-name={service}",
        "-o=json",
    )  # fmt: skip
    return {
        endpoint["targetRef"]["name"]
        for item in json.loads(listing.stdout)["items"]
        for endpoint in item.get("endpoints") or []
    }


def can(cluster, namespace: str, account: str, verb: str, resource: str, where: str) -> bool:
    answer = cluster.try_kubectl(
        "auth", "can-i", verb, resource, f"-n={where}",
        f"--as=system:serviceaccount:{namespace}:{account}",
    )  # fmt: skip
    return answer.stdout.strip() == "yes"


def test_the_sample_serves_through_a_gateway_with_least_privilege(
    cluster, namespace, installed_operator
):
    # The gateway pod must pass the restricted Pod Security Standard (as the workers do).
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    models_volume(cluster, namespace)
    cluster.kubectl("apply", f"-n={namespace}", "-f", str(SAMPLE))
    name = "stories-gateway"
    # GatewayReady turns True with the first ready pod: wait for the second one.
    wait_condition(
        cluster, namespace, name, "GatewayReady", "True", "Serving",
        message="2/2 gateway pods ready",
    )  # fmt: skip
    ready = wait_condition(cluster, namespace, name, "Ready", "True")
    assert ready["message"].endswith("through 2 ready gateway pods")
    assert status(cluster, namespace, name)["gatewayReadyReplicas"] == 2

    found = gateway_objects(cluster, namespace, name)
    assert set(found) == {
        "Deployment/stories-gateway-gateway",
        "ConfigMap/stories-gateway-gateway",
        "ServiceAccount/stories-gateway-gateway",
        "Role/stories-gateway-gateway",
        "RoleBinding/stories-gateway-gateway",
        "PodDisruptionBudget/stories-gateway-gateway",
        "Service/stories-gateway-active",  # no fallback in the sample: no standby Service
    }
    assert found["PodDisruptionBudget/stories-gateway-gateway"]["spec"]["maxUnavailable"] == 1
    cluster.wait_for(  # the gateway pods, and only those: one may go at a time
        lambda: (
            cluster.get("pdb", f"{name}-gateway", namespace).get("status", {}).get("expectedPods")
            == 2
        ),
        what="the gateway's disruption budget to count its two pods",
    )
    uid = cluster.get("llmdeployment", name, namespace)["metadata"]["uid"]
    for obj in found.values():
        [reference] = obj["metadata"]["ownerReferences"]
        assert reference["uid"] == uid and reference["controller"] is True
    pod = found["Deployment/stories-gateway-gateway"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["pagoda"]
    assert container["args"] == [
        "gateway",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--discover", f"{namespace}/{name}",
        "--hold-queue-size", "64",
        "--hold-timeout", "30",
        "--drain-timeout", "10",
        "--tenants", "/etc/pagoda/gateway/tenants.yaml",
    ]  # fmt: skip
    tenants = yaml.safe_load(found["ConfigMap/stories-gateway-gateway"]["data"]["tenants.yaml"])
    assert [t["name"] for t in tenants["tenants"]] == ["team-a", "team-b"]
    assert tenants["tenants"][1]["keyFile"] == "/etc/pagoda/tenant-keys/team-b/key"

    # Clients reach the gateway pods; the gateway finds the workers behind the -active Service.
    main = cluster.get("service", name, namespace)
    assert main["spec"]["selector"] == {"pagoda.dev/gateway": name}
    assert status(cluster, namespace, name)["serviceTarget"] == "gateway"
    gateway_pods = cluster.wait_for(
        lambda: endpoint_pods(cluster, namespace, name) or None,
        what="the gateway pods behind the Service",
    )
    assert len(gateway_pods) == 2
    assert all(p.startswith(f"{name}-gateway-") for p in gateway_pods), gateway_pods
    workers = cluster.wait_for(
        lambda: endpoint_pods(cluster, namespace, f"{name}-active") or None,
        what="the worker pod behind the -active Service",
    )
    assert all(p.startswith(f"{name}-primary-") for p in workers), workers
    active = found["Service/stories-gateway-active"]["spec"]
    assert active["clusterIP"] == "None"

    account = f"{name}-gateway"
    for verb in ("get", "list", "watch"):
        assert can(cluster, namespace, account, verb, "endpointslices.discovery.k8s.io", namespace)
    assert not can(
        cluster, namespace, account, "list", "endpointslices.discovery.k8s.io", "default"
    )
    assert not can(
        cluster, namespace, account, "create", "endpointslices.discovery.k8s.io", namespace
    )
    for verb, resource in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("get", "pods"),
        ("list", "services"),
    ]:
        assert not can(cluster, namespace, account, verb, resource, namespace), (verb, resource)


def service_selector(cluster, namespace: str, name: str) -> dict:
    return cluster.get("service", name, namespace)["spec"]["selector"]


def test_a_gateway_turned_on_takes_the_service_once_ready_and_keeps_it(
    cluster, namespace, installed_operator
):
    models_volume(cluster, namespace)
    key = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "live-key"},
           "stringData": {"key": "example-key"}}  # fmt: skip
    cluster.apply(key, namespace=namespace)
    serving = {"apiKeySecret": {"name": "live-key"}}
    cluster.apply(llmdeployment("live", replicas=1, serving=serving), namespace=namespace)
    wait_condition(cluster, namespace, "live", "Ready", "True")
    [worker] = cluster.wait_for(
        lambda: endpoint_pods(cluster, namespace, "live") or None, what="the worker pod"
    )

    # Gateway pods asking for more CPUs than any node has (32): they never become ready.
    patch_spec(cluster, namespace, "live", {"gateway": {"replicas": 1, "resources": {"cpu": "64"}}})
    gateway = wait_condition(cluster, namespace, "live", "GatewayReady", "False", "Unschedulable")
    assert "sends clients to the workers directly until one is" in gateway["message"]
    assert service_selector(cluster, namespace, "live") == WORKERS
    assert status(cluster, namespace, "live")["serviceTarget"] == "workers"
    assert endpoint_pods(cluster, namespace, "live") == {worker}, "the workers still serve"
    ready = wait_condition(cluster, namespace, "live", "Ready", "True")
    assert ready["message"].endswith("directly, until a gateway pod is ready")
    # The workers' key stays the clients' key: the gateway checks it as tenant `default`.
    found = gateway_objects(cluster, namespace, "live")
    tenants = yaml.safe_load(found["ConfigMap/live-gateway"]["data"]["tenants.yaml"])
    assert tenants == {"tenants": [{"name": "default", "keyFile": "/etc/pagoda/api-key/key"}]}
    [container] = found["Deployment/live-gateway"]["spec"]["template"]["spec"]["containers"]
    assert "--tenants" in container["args"] and "--backend-api-key-file" in container["args"]

    # A gateway pod that fits becomes ready: the Service turns to the gateway.
    patch_spec(cluster, namespace, "live", {"gateway": {"resources": {"cpu": "100m"}}})
    wait_condition(cluster, namespace, "live", "GatewayReady", "True", "Serving")
    assert service_selector(cluster, namespace, "live") == GATEWAY_PODS
    assert status(cluster, namespace, "live")["serviceTarget"] == "gateway"
    [gateway_pod] = cluster.wait_for(
        lambda: (pods := endpoint_pods(cluster, namespace, "live")) != {worker} and pods,
        what="the gateway pod behind the Service",
    )
    assert gateway_pod.startswith("live-gateway-"), gateway_pod

    # It fails readiness: the Service stays on the gateway (the workers would skip its keys).
    cluster.inject_fault(gateway_pod, namespace, Fault.UNREADY)
    wait_condition(cluster, namespace, "live", "Ready", "False", "GatewayNotReady")
    assert service_selector(cluster, namespace, "live") == GATEWAY_PODS
    assert status(cluster, namespace, "live")["serviceTarget"] == "gateway"


def test_removing_the_gateway_deletes_its_objects(cluster, namespace, installed_operator):
    models_volume(cluster, namespace)
    fallback = {"model": {"source": {"hf": {"repo": "org/small"}}}, "resources": {"gpus": 0}}
    cluster.apply(
        llmdeployment("chat", replicas=1, fallback=fallback, gateway={"replicas": 1}),
        namespace=namespace,
    )
    wait_condition(cluster, namespace, "chat", "GatewayReady", "True")
    standby = cluster.get("service", "chat-standby", namespace)["spec"]["selector"]
    assert standby == {"pagoda.dev/deployment": "chat", "pagoda.dev/tier": "fallback"}
    assert len(gateway_objects(cluster, namespace, "chat")) == 8

    patch_spec(cluster, namespace, "chat", {"gateway": None})
    wait_condition(cluster, namespace, "chat", "GatewayReady", "False", "NoGateway")
    cluster.wait_for(
        lambda: not gateway_objects(cluster, namespace, "chat"),
        what="every gateway object to be deleted",
    )
    main = cluster.get("service", "chat", namespace)["spec"]["selector"]
    assert main == {"pagoda.dev/deployment": "chat", "pagoda.dev/tier": "primary"}
    assert status(cluster, namespace, "chat")["serviceTarget"] == "workers"
    wait_condition(cluster, namespace, "chat", "Ready", "True")
    assert status(cluster, namespace, "chat")["gatewayReplicas"] == 0


def test_the_apiserver_refuses_duplicate_tenant_names(cluster, namespace, installed_operator):
    tenant = {"name": "team-a", "apiKeySecret": {"name": "a"}}
    twice = llmdeployment("dup", gateway={"tenants": [tenant, {**tenant, "requestsPerMinute": 5}]})
    answer = cluster.try_kubectl("apply", f"-n={namespace}", "-f=-", input=yaml.safe_dump(twice))
    assert answer.returncode != 0
    assert "spec.gateway.tenants" in answer.stderr
    assert "gateway.tenants must have unique names" in answer.stderr


def test_the_operator_never_lacked_a_permission(installed_operator):
    """Runs last: everything above was done with the installed permissions alone."""
    # What the RBAC authorizer says. Not any 403: a namespace a test deleted refuses new objects
    # with one too, while the operator may still reconcile in it.
    denied = re.findall(r"forbidden: User .{0,200}? cannot [^\n]{0,200}", installed_operator.log())
    assert not denied, denied[:3]
