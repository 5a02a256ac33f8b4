"""`kubectl apply -k manifests/` installs the operator; the operator then works with exactly the
permissions the manifests grant its ServiceAccount.

KWOK fakes pods, so the operator Deployment's pods only pretend to run. The real operator runs
here as a process that authenticates with a token of the installed ServiceAccount.
"""

from __future__ import annotations

import re

import pytest
import yaml

from e2e.operator_support import (
    REPO,
    Operator,
    condition,
    events,
    llmdeployment,
    models_volume,
    wait_condition,
)

MANIFESTS = REPO / "manifests"
ACCOUNT = "system:serviceaccount:pagoda-system:pagoda-operator"


@pytest.fixture(scope="module")
def installed(cluster):
    cluster.kubectl("apply", "-k", str(MANIFESTS))
    yield
    cluster.kubectl("delete", "-k", str(MANIFESTS), "--ignore-not-found", "--timeout=120s")


def service_account_kubeconfig(cluster, path) -> None:
    """A kubeconfig that authenticates as the operator's ServiceAccount."""
    token = cluster.kubectl(
        "create", "token", "pagoda-operator", "-n=pagoda-system", "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubectl("config", "view", "--raw", "--minify").stdout)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e2e", "cluster": admin["clusters"][0]["cluster"]}],
                "users": [{"name": "pagoda-operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": "e2e", "user": "pagoda-operator"}}
                ],
                "current-context": "sa",
            }
        )
    )


def test_manifests_install_a_hardened_operator(cluster, installed):
    cluster.wait_crds_established("llmdeployments.pagoda.dev")
    deployment = cluster.get("deployment", "pagoda-operator", "pagoda-system")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "pagoda-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["memory"]
    assert "--peering=pagoda" in container["args"]
    cluster.kubectl(
        "rollout", "status", "deployment/pagoda-operator", "-n=pagoda-system", "--timeout=60s"
    )  # KWOK's fake pods: this proves the manifest schedules, not that the image runs


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "llmdeployments.pagoda.dev", True),
        ("update", "llmdeployments.pagoda.dev/status", True),
        ("patch", "llmdeployments.pagoda.dev/status", False),  # only ever a guarded replace
        ("get", "services", False),  # applied, never read back
        ("get", "deployments.apps", True),  # read back for their rollout state
        ("delete", "deployments.apps", True),  # a removed fallback tier
        ("delete", "configmaps", True),  # revisions neither in use nor kept for a rollback
        ("update", "llmdeployments.pagoda.dev", False),  # never writes spec
        ("patch", "deployments.apps", True),
        ("list", "pods", True),
        ("delete", "pods", False),
        ("get", "secrets", False),
        ("list", "resourcequotas", True),
        ("list", "nodes", True),  # can a fallback pod fit on any node
        ("patch", "nodes", False),
        ("create", "events", True),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
    ],
)
def test_service_account_has_least_privilege(cluster, installed, verb, resource, allowed):
    resource, _, subresource = resource.partition("/")
    args = [f"--subresource={subresource}"] if subresource else []
    answer = cluster.try_kubectl("auth", "can-i", verb, resource, *args, f"--as={ACCOUNT}", "-A")
    assert answer.stdout.strip() == ("yes" if allowed else "no")


def test_operator_works_with_the_installed_permissions(cluster, installed, namespace, tmp_path):
    kubeconfig = tmp_path / "operator.kubeconfig"
    service_account_kubeconfig(cluster, kubeconfig)
    operator = Operator(cluster, tmp_path, "--peering=pagoda", kubeconfig=kubeconfig).start()
    try:
        assert operator.healthy() == {"active": True}, "the operator reports ready"
        peers = cluster.get("clusterkopfpeering", "pagoda").get("status") or {}
        assert len(peers) == 1

        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "gpus"},
            "spec": {"hard": {"requests.nvidia.com/gpu": "8"}},
        }
        cluster.apply(quota, namespace=namespace)
        models_volume(cluster, namespace)
        fallback = {"model": {"source": {"hf": {"repo": "org/small"}}}, "resources": {"gpus": 0}}
        cluster.apply(llmdeployment("rbac", fallback=fallback), namespace=namespace)
        wait_condition(cluster, namespace, "rbac", "Ready", "True")
        assert condition(cluster, namespace, "rbac", "QuotaExceeded")["reason"] == "WithinQuota"
        assert events(cluster, namespace, "rbac"), "Events are posted"
        for name in ("rbac-primary", "rbac-fallback"):
            cluster.get("deployment", name, namespace)

        log = operator.log()
        # A whole-word 403: random numbers in the log (peering priorities) may contain the digits.
        assert not re.search(r"Forbidden|\b403\b", log), log[-3000:]
    finally:
        operator.stop()
