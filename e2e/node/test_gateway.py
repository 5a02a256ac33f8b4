"""spec.gateway on a real node: the operator's gateway pod finds the worker pod through the
apiserver (in-cluster, with its ServiceAccount's projected token), and clients of the
LLMDeployment's Service go through it: tenant keys, a tenant's limit, streaming."""

from __future__ import annotations

import json

from pagoda_operator.naming import gateway_selector

from e2e.control_plane import KUBERNETES_SERVICE_IP
from e2e.local_cluster import LocalCluster
from e2e.node import settings
from e2e.node.node import NODE_IP
from e2e.node.support import (
    apply_sample,
    pod_url,
    ready_endpoints,
    ready_pods,
    send,
    service_url,
    stream_completion,
)
from e2e.operator_support import status, wait_condition

# Test keys for throwaway Secrets, never used anywhere else.
KEYS = {"team-a": "e2e-node-key-team-a", "team-b": "e2e-node-key-team-b"}
TEAM_B_RPM = 2
COMPLETION = {"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8}


def tenant_secrets(cluster: LocalCluster, namespace: str) -> None:
    for tenant, key in KEYS.items():
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{tenant}-key"},
            "stringData": {"key": key},
        }
        cluster.apply(secret, namespace=namespace)


def bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def gateway_spec() -> dict:
    tenants = [
        {"name": "team-a", "apiKeySecret": {"name": "team-a-key"}},
        {
            "name": "team-b",
            "apiKeySecret": {"name": "team-b-key"},
            "requestsPerMinute": TEAM_B_RPM,
        },
    ]
    return {
        "replicas": 1,
        # The tier builds only the worker image; every Pagoda image runs `pagoda gateway`.
        "image": settings.current().images["worker"].reference,
        "tenants": tenants,
        # A quarter core: the worker beside it asks for one of the node's two.
        "resources": {"cpu": "250m", "memory": "512Mi"},
    }


def gateway_pods(cluster: LocalCluster, namespace: str, name: str) -> list[dict]:
    [(label, value)] = gateway_selector(name).items()
    found = cluster.kubectl("get", "pods", f"-n={namespace}", f"-l={label}={value}", "-o=json")
    return json.loads(found.stdout)["items"]


def gateway_logs(cluster: LocalCluster, namespace: str, name: str) -> str:
    """The gateway pods' logs: why discovery failed, when it did."""
    [(label, value)] = gateway_selector(name).items()
    found = cluster.try_kubectl("logs", f"-n={namespace}", f"-l={label}={value}", "--tail=40")
    return found.stdout + found.stderr


def test_the_kubernetes_service_leads_pods_to_the_apiserver(cluster: LocalCluster) -> None:
    # What the gateway's in-cluster client dials: the Service's ClusterIP, kube-proxy's DNAT
    # to the endpoint the apiserver publishes.
    service = cluster.get("service", "kubernetes", "default")
    assert service["spec"]["clusterIP"] == KUBERNETES_SERVICE_IP
    assert ready_endpoints(cluster, "default", "kubernetes") == {NODE_IP}


def test_tenants_reach_the_worker_through_the_gateway(
    cluster: LocalCluster, namespace: str, operator
) -> None:
    tenant_secrets(cluster, namespace)
    name = apply_sample(cluster, namespace, gateway=gateway_spec())
    try:
        wait_condition(cluster, namespace, name, "GatewayReady", "True", timeout=240)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{gateway_logs(cluster, namespace, name)}") from error
    wait_condition(cluster, namespace, name, "Ready", "True", timeout=240)
    assert status(cluster, namespace, name)["gatewayReadyReplicas"] == 1
    [worker] = ready_pods(cluster, namespace)
    [gateway] = gateway_pods(cluster, namespace, name)
    # Clients of the Service reach the gateway pod, never a worker directly.
    assert ready_endpoints(cluster, namespace, name) == {gateway["status"]["podIP"]}
    url = service_url(cluster, namespace, name)

    answer = send(f"{url}/v1/completions", COMPLETION, bearer("team-a"))
    assert answer.status == 200, answer
    assert answer.headers["x-pagoda-backend"] == worker["metadata"]["name"]
    assert answer.body["choices"][0]["text"]
    assert answer.body["usage"]["completion_tokens"] == COMPLETION["max_tokens"]

    # Streamed chunk by chunk through the gateway; greedy, so the text is the worker's own.
    through = stream_completion(url, max_tokens=24, headers=bearer("team-a"))
    assert through.clean, through
    direct = stream_completion(pod_url(worker), max_tokens=24)
    assert direct.clean, direct
    assert through.text == direct.text and len(through.chunks) == len(direct.chunks)

    anonymous = send(f"{url}/v1/completions", COMPLETION)
    assert anonymous.status == 401, anonymous
    assert anonymous.body["error"]["code"] == "invalid_api_key"
    wrong = send(f"{url}/v1/completions", COMPLETION, {"Authorization": "Bearer not-a-key"})
    assert wrong.status == 401, wrong

    # team-b's limit is its own: team-a's requests above did not count against it.
    for _ in range(TEAM_B_RPM):
        allowed = send(f"{url}/v1/completions", COMPLETION, bearer("team-b"))
        assert allowed.status == 200, allowed
    limited = send(f"{url}/v1/completions", COMPLETION, bearer("team-b"))
    assert limited.status == 429, limited
    assert limited.body["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-limit-requests"] == str(TEAM_B_RPM)
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    # team-a has no limit: still served.
    assert send(f"{url}/v1/completions", COMPLETION, bearer("team-a")).status == 200
