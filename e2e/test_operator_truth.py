"""The operator never fails silently and never calls a bad state healthy (issue 11), on a real
control plane: refused children, quantities, bake time, rollbacks GitOps can see, a status wipe,
and a cold GPU fallback that needs the primary's GPUs."""

from __future__ import annotations

import contextlib
import json

import yaml

from e2e.faults import FAULT_ANNOTATION, Fault
from e2e.operator_support import (
    CRDS,
    condition,
    events,
    llmdeployment,
    models_volume,
    patch_spec,
    pods,
    ready,
    status,
    wait_condition,
)

CPU = {"gpus": 0, "cpu": "1", "memory": "2Gi"}


def row(cluster, namespace: str, name: str) -> list[str]:
    """kubectl get llmd: NAME READY UP-TO-DATE PHASE TIER MODEL GPUS AGE."""
    return cluster.kubectl("get", "llmd", name, f"-n={namespace}", "--no-headers").stdout.split()


def warning_reasons(cluster, namespace: str, name: str) -> set[str]:
    return {e["reason"] for e in events(cluster, namespace, name) if e["type"] == "Warning"}


def template_revision(cluster, namespace: str, name: str) -> str:
    found = cluster.get("deployment", f"{name}-primary", namespace)
    return found["spec"]["template"]["metadata"]["labels"]["pagoda.dev/revision"]


@contextlib.contextmanager
def memory_policy(cluster, namespace: str):
    """A platform policy the CRD cannot know: no worker Deployment with a 100Gi memory limit in
    this namespace (a ValidatingAdmissionPolicy, as a platform team would write one)."""
    name = f"no-100gi-{namespace}"
    refuse = (
        "!object.spec.template.spec.containers.exists(c, has(c.resources.limits)"
        " && 'memory' in c.resources.limits && c.resources.limits['memory'] == '100Gi')"
    )
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": ["apps"], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["deployments"],
                }]
            },
            "validations": [{"expression": refuse, "message": "100Gi pods are not allowed here"}],
        },
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    cluster.apply(policy, binding)
    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "policy-probe", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {"containers": [
                    {"name": "c", "image": "x", "resources": {"limits": {"memory": "100Gi"}}}
                ]},
            },
        },
    }  # fmt: skip
    cluster.wait_for(
        lambda: cluster.try_kubectl("apply", "--dry-run=server", "-f", "-",
                                    input=json.dumps(probe)).returncode != 0,
        what="the policy to take effect",
    )  # fmt: skip
    try:
        yield
    finally:
        cluster.kubectl(
            "delete", f"validatingadmissionpolicybinding/{name}",
            f"validatingadmissionpolicy/{name}", "--ignore-not-found",
        )  # fmt: skip


def test_a_child_the_apiserver_refuses_is_a_condition_and_an_event(cluster, namespace, operator):
    models_volume(cluster, namespace)
    with memory_policy(cluster, namespace):
        big = {**CPU, "memory": "100Gi"}
        cluster.apply(llmdeployment("refused", resources=big), namespace=namespace)
        refused = wait_condition(
            cluster, namespace, "refused", "Ready", "False", "DeploymentRejected"
        )
        assert "Deployment refused-primary was rejected by the apiserver" in refused["message"]
        assert "100Gi pods are not allowed here" in refused["message"]
        assert "nothing serves" in refused["message"]
        current = status(cluster, namespace, "refused")
        assert current["phase"] == "Failed" and current["observedGeneration"] == 1
        assert condition(cluster, namespace, "refused", "UpToDate")["status"] == "False"
        assert row(cluster, namespace, "refused")[1:4] == ["False", "False", "Failed"]
        assert "DeploymentRejected" in warning_reasons(cluster, namespace, "refused")

        # Fixed: it rolls out.
        patch_spec(cluster, namespace, "refused", {"resources": {"memory": "2Gi"}})
        wait_condition(cluster, namespace, "refused", "Ready", "True")
        wait_condition(cluster, namespace, "refused", "UpToDate", "True", timeout=30)

        # A Ready deployment made invalid is not Ready any more, and says what still serves.
        before = status(cluster, namespace, "refused")["revisions"]["lastReady"]
        patch_spec(cluster, namespace, "refused", {"model": {"name": "v2"}, "resources": big})
        again = wait_condition(
            cluster, namespace, "refused", "Ready", "False", "DeploymentRejected"
        )
        assert "meanwhile 2/2 primary pods ready (earlier revisions)" in again["message"]
        current = status(cluster, namespace, "refused")
        generation = cluster.get("llmd", "refused", namespace)["metadata"]["generation"]
        assert current["observedGeneration"] == generation == 3
        assert current["revisions"]["lastReady"] == before
        assert current["model"] == "stories", "the model that serves, not the spec's"
        assert row(cluster, namespace, "refused")[1:6] == [
            "False", "False", "Failed", "primary", "stories"
        ]  # fmt: skip
        assert all(ready(p) for p in pods(cluster, namespace)), "the old pods keep serving"


def test_a_quota_written_as_1k_is_read_as_1000(cluster, namespace, operator):
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpus"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "1k"}},
    }
    cluster.apply(quota, namespace=namespace)
    models_volume(cluster, namespace)
    cluster.apply(llmdeployment("thousand", replicas=1), namespace=namespace)
    within = wait_condition(cluster, namespace, "thousand", "QuotaExceeded", "False", "WithinQuota")
    assert "allows 1000 GPUs" in within["message"]
    wait_condition(cluster, namespace, "thousand", "Ready", "True")


def test_a_crash_while_baking_rolls_back_and_survives_a_status_wipe(cluster, namespace, operator):
    models_volume(cluster, namespace)
    rollout = {"maxSurge": 1, "maxUnavailable": 0, "minReadySeconds": 15}
    cluster.apply(llmdeployment("bake", resources=CPU, rollout=rollout), namespace=namespace)
    wait_condition(cluster, namespace, "bake", "Progressing", "False", "RolloutComplete")
    good = status(cluster, namespace, "bake")["revisions"]["lastReady"]
    assert good

    # The new revision's pods pass readiness, then crash a few seconds later.
    crashing = {"model": {"name": "crashy"}, "podAnnotations": {FAULT_ANNOTATION: "crash-loop"}}
    patch_spec(cluster, namespace, "bake", crashing)
    rolled_back = wait_condition(
        cluster, namespace, "bake", "RolledBack", "True", "CrashedDuringRollout"
    )
    message = rolled_back["message"]
    assert "rollout.minReadySeconds (15s)" in message and "restarted" in message
    assert "Degraded" not in message, "the reason is in the message, not behind a pointer"
    revisions = status(cluster, namespace, "bake")["revisions"]
    bad = revisions["desired"]
    assert revisions["rolledBackFrom"] == bad and revisions["lastReady"] == good
    cluster.wait_for(
        lambda: (found := pods(cluster, namespace)) and len(found) == 2 and all(
            ready(p) and p["metadata"]["labels"]["pagoda.dev/revision"] == good for p in found
        ),
        what="only the good revision's pods, all ready",
    )  # fmt: skip
    up_to_date = wait_condition(cluster, namespace, "bake", "UpToDate", "False", "RolledBack")
    assert bad in up_to_date["message"]
    cluster.wait_for(lambda: status(cluster, namespace, "bake")["phase"] == "RolledBack",
                     what="phase RolledBack")  # fmt: skip
    assert row(cluster, namespace, "bake")[1:6] == [
        "True", "False", "RolledBack", "primary", "stories"
    ]  # fmt: skip
    assert "CrashedDuringRollout" in warning_reasons(cluster, namespace, "bake")

    # A restore that skips status: the operator remembers the rollback on the ConfigMaps and
    # does not roll the broken revision again.
    generation = cluster.get("deployment", "bake-primary", namespace)["metadata"]["generation"]
    cluster.kubectl(
        "patch", "llmd/bake", f"-n={namespace}", "--subresource=status", "--type=json",
        '-p=[{"op": "remove", "path": "/status"}]',
    )  # fmt: skip
    restored = wait_condition(
        cluster, namespace, "bake", "RolledBack", "True", "CrashedDuringRollout"
    )
    assert restored["message"] == message
    revisions = status(cluster, namespace, "bake")["revisions"]
    assert revisions["rolledBackFrom"] == bad and revisions["lastReady"] == good
    assert template_revision(cluster, namespace, "bake") == good
    after = cluster.get("deployment", "bake-primary", namespace)["metadata"]["generation"]
    assert after == generation, "the Deployment was not touched"


def test_a_revision_replaced_during_its_bake_is_rolled_back_to(cluster, namespace, operator):
    """The spec changes before the first revision's pod has stayed ready for minReadySeconds.
    The pod keeps serving (maxUnavailable 0), so the first revision becomes ready once it has,
    and the next revision's crash rolls back to it."""
    models_volume(cluster, namespace)
    # Longer than a crash-looping pod stays ready (KWOK crashes it within 4.5 s), so the
    # crashing revision never bakes.
    rollout = {"maxSurge": 1, "maxUnavailable": 0, "minReadySeconds": 8}
    cluster.apply(
        llmdeployment("early", replicas=1, resources=CPU, rollout=rollout), namespace=namespace
    )
    cluster.wait_for(lambda: (found := pods(cluster, namespace)) and all(map(ready, found)),
                     what="the first revision's pod, ready")  # fmt: skip
    first = template_revision(cluster, namespace, "early")
    assert "lastReady" not in status(cluster, namespace, "early").get("revisions", {}), (
        "the spec changes while the first revision bakes"
    )
    crashing = {"model": {"name": "crashy"}, "podAnnotations": {FAULT_ANNOTATION: "crash-loop"}}
    patch_spec(cluster, namespace, "early", crashing)

    rolled_back = wait_condition(
        cluster, namespace, "early", "RolledBack", "True", "CrashedDuringRollout"
    )
    assert "rollout.minReadySeconds (8s)" in rolled_back["message"]
    revisions = status(cluster, namespace, "early")["revisions"]
    assert revisions["lastReady"] == first and revisions["current"] == first
    assert revisions["rolledBackFrom"] == revisions["desired"] != first
    cluster.wait_for(lambda: template_revision(cluster, namespace, "early") == first,
                     what="the primary back on the first revision")  # fmt: skip
    config_map = cluster.get("configmap", f"early-primary-{first}", namespace)
    assert "pagoda.dev/ready-at" in config_map["metadata"]["annotations"], "survives a wipe"


def test_a_cold_gpu_fallback_gets_the_gpus_of_crash_looping_primaries(cluster, namespace, operator):
    node = f"pool-{namespace}"
    cluster.add_gpu_node(node, gpus=4, labels={"e2e.pagoda.dev/pool": namespace})
    try:
        pool = {"e2e.pagoda.dev/pool": namespace}
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "gpus"},
            "spec": {"hard": {"requests.nvidia.com/gpu": "5"}},
        }
        cluster.apply(quota, namespace=namespace)
        models_volume(cluster, namespace)
        fallback = {
            "model": {"source": {"hf": {"repo": "org/small-model"}}},
            "replicas": 1,
            "warm": False,
            "resources": {"gpus": 2, "nodeSelector": pool},
            "engine": {"tensorParallelSize": 2},
            "promoteAfterSeconds": 2,
            "demoteAfterSeconds": 600,
        }
        spec = {
            "resources": {"gpus": 2, "nodeSelector": pool},
            "engine": {"tensorParallelSize": 2},
            "fallback": fallback,
        }
        cluster.apply(llmdeployment("cold", **spec), namespace=namespace)

        # Checked at creation, not discovered at failover time.
        wont_fit = wait_condition(
            cluster, namespace, "cold", "QuotaExceeded", "True", "FallbackWouldNotFit"
        )
        for fact in ("1 fallback x 2 GPUs", "primary's 4", "6 in all", "allows 5", "at least 6"):
            assert fact in wont_fit["message"], (fact, wont_fit["message"])
        assert "FallbackWouldNotFit" in warning_reasons(cluster, namespace, "cold")
        quota["spec"]["hard"]["requests.nvidia.com/gpu"] = "6"
        cluster.apply(quota, namespace=namespace)
        wait_condition(cluster, namespace, "cold", "QuotaExceeded", "False", "WithinQuota")
        wait_condition(cluster, namespace, "cold", "Ready", "True")
        cluster.wait_for(lambda: status(cluster, namespace, "cold").get("readyReplicas") == 2,
                         what="both primary pods, holding all 4 GPUs of the node")  # fmt: skip

        for pod in pods(cluster, namespace, "primary"):
            cluster.make_pod_crash_loop(pod["metadata"]["name"], namespace)
        promoted = wait_condition(
            cluster, namespace, "cold", "FallbackActive", "True", "PrimaryUnavailable", timeout=90
        )
        assert "crash-looping pods were removed to free their GPUs" in promoted["message"]
        assert cluster.get("deployment", "cold-primary", namespace)["spec"]["replicas"] == 0
        [serving] = pods(cluster, namespace, "fallback")
        assert ready(serving) and serving["spec"]["nodeName"] == node
        assert any("free their GPUs" in e["message"] for e in events(cluster, namespace, "cold")), (
            "an Event says so"
        )
    finally:
        cluster.kubectl("delete", "node", node, "--wait=false", "--ignore-not-found")


def test_smaller_truths(cluster, namespace, operator):
    models_volume(cluster, namespace)
    cluster.apply(llmdeployment("one", replicas=1, resources={"gpus": 1}), namespace=namespace)
    complete = wait_condition(cluster, namespace, "one", "Progressing", "False", "RolloutComplete")
    assert complete["message"].endswith("rolled out to 1 pod")
    assert row(cluster, namespace, "one")[6] == "1", "GPUS: what runs, not the surge peak"
    assert status(cluster, namespace, "one")["gpus"]["requested"] == 2

    # Healthy, then failing: not "yet".
    [pod] = pods(cluster, namespace)
    cluster.inject_fault(pod["metadata"]["name"], namespace, Fault.UNREADY)
    down = wait_condition(cluster, namespace, "one", "Ready", "False", "NoReadyPods")
    assert "no primary pod is ready (0/1)" in down["message"]

    # A claim that does not exist: a hint about the claim, not about GPUs.
    missing = {"pvc": {"claimName": "no-such-claim"}}
    cluster.apply(
        llmdeployment("unbound", replicas=1, resources=CPU,
                      model={"name": "m", "source": missing}),
        namespace=namespace,
    )  # fmt: skip
    unschedulable = wait_condition(
        cluster, namespace, "unbound", "Degraded", "True", "Unschedulable"
    )
    assert "PersistentVolumeClaim of spec.model.source.pvc" in unschedulable["message"]
    assert "resources.gpus" not in unschedulable["message"]
    waiting = condition(cluster, namespace, "unbound", "Ready")
    assert "no primary pod is ready yet (0/1)" in waiting["message"]


def test_a_fallback_no_node_could_hold_is_reported_before_a_failover(cluster, namespace, operator):
    models_volume(cluster, namespace)
    fallback = {
        "model": {"source": {"hf": {"repo": "org/small-model"}}},
        "warm": False,
        "resources": {"gpus": 8},  # the test cluster's nodes have 4
        "engine": {"tensorParallelSize": 8},
    }
    cluster.apply(llmdeployment("toobig", replicas=1, fallback=fallback), namespace=namespace)
    wont_fit = wait_condition(
        cluster, namespace, "toobig", "FallbackActive", "False", "FallbackWouldNotFit"
    )
    assert "needs 1 pod x 8 GPUs" in wont_fit["message"]
    assert "the largest offers 4 nvidia.com/gpu" in wont_fit["message"]
    assert "FallbackWouldNotFit" in warning_reasons(cluster, namespace, "toobig")
    wait_condition(cluster, namespace, "toobig", "Ready", "True")


def test_an_object_stored_under_a_looser_crd_is_reported_not_retried_silently(
    cluster, namespace, operator
):
    """As after upgrading the CRD: objects stored before keep values the new schema refuses."""
    models_volume(cluster, namespace)
    crd = yaml.safe_load((CRDS / "llmdeployments.pagoda.dev.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    cpu = schema["properties"]["spec"]["properties"]["resources"]["properties"]["cpu"]
    del cpu["pattern"], cpu["x-kubernetes-validations"]
    old = llmdeployment("legacy", replicas=1, resources={**CPU, "cpu": "1.2.3"})
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    input=json.dumps(crd))  # fmt: skip
    try:
        cluster.wait_for(
            lambda: cluster.try_kubectl("apply", f"-n={namespace}", "-f", "-",
                                        input=json.dumps(old)).returncode == 0,
            what="the looser CRD to take the old object",
        )  # fmt: skip
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(CRDS))
    invalid = wait_condition(cluster, namespace, "legacy", "Ready", "False", "InvalidSpec")
    assert "spec.resources.cpu" in invalid["message"]
    assert status(cluster, namespace, "legacy")["phase"] == "Failed"
    assert "InvalidSpec" in warning_reasons(cluster, namespace, "legacy")
    patch_spec(cluster, namespace, "legacy", {"resources": {"cpu": "1"}})
    wait_condition(cluster, namespace, "legacy", "Ready", "True")
