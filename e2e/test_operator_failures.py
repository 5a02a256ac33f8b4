"""The operator facing failure on a real control plane: stalled rollouts, failing primaries,
GPU quota, unschedulable pods, invalid specs."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from e2e.faults import FAULT_ANNOTATION
from e2e.operator_support import (
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


def service_tier(cluster, namespace: str, name: str) -> str:
    return cluster.get("service", name, namespace)["spec"]["selector"]["pagoda.dev/tier"]


def test_a_rollout_that_never_becomes_ready_is_rolled_back(cluster, namespace, operator):
    models_volume(cluster, namespace)
    rollout = {"maxSurge": 1, "maxUnavailable": 0, "progressDeadlineSeconds": 5}
    cluster.apply(llmdeployment("rb", replicas=2, rollout=rollout), namespace=namespace)
    wait_condition(cluster, namespace, "rb", "Progressing", "False", "RolloutComplete")
    good = status(cluster, namespace, "rb")["revisions"]["current"]

    # The new revision's pods can never pull their image.
    bad_spec = {
        "model": {"name": "broken"},
        "podAnnotations": {FAULT_ANNOTATION: "image-pull-error"},
    }
    patch_spec(cluster, namespace, "rb", bad_spec)
    rolled_back = wait_condition(cluster, namespace, "rb", "RolledBack", "True", timeout=90)
    current = status(cluster, namespace, "rb")["revisions"]
    bad = current["desired"]
    assert bad != good
    assert current["rolledBackFrom"] == bad and current["lastReady"] == good
    assert bad in rolled_back["message"] and good in rolled_back["message"]
    assert "progressDeadlineSeconds (5s)" in rolled_back["message"]

    primary = cluster.get("deployment", "rb-primary", namespace)
    assert primary["spec"]["template"]["metadata"]["labels"]["pagoda.dev/revision"] == good
    cluster.wait_for(
        lambda: (found := pods(cluster, namespace)) and len(found) == 2 and all(
            ready(p) and p["metadata"]["labels"]["pagoda.dev/revision"] == good for p in found
        ),
        what="only the good revision's pods, all ready",
    )  # fmt: skip
    wait_condition(cluster, namespace, "rb", "Progressing", "False", "RolledBack")
    wait_condition(cluster, namespace, "rb", "Ready", "True")
    warnings = [e for e in events(cluster, namespace, "rb") if e["type"] == "Warning"]
    assert any(e["reason"] == "ProgressDeadlineExceeded" and "RolledBack" in e["message"]
               for e in warnings)  # fmt: skip

    # Fixing the spec rolls out again.
    patch_spec(cluster, namespace, "rb", {"podAnnotations": None})
    cluster.wait_for(
        lambda: status(cluster, namespace, "rb")["revisions"].get("lastReady") not in (good, bad),
        timeout=60,
        what="the fixed revision to roll out",
    )
    assert condition(cluster, namespace, "rb", "RolledBack")["status"] == "False"
    assert any(e["reason"] == "NoRollback" and "RolledBack=False" in e["message"]
               for e in events(cluster, namespace, "rb"))  # fmt: skip


def test_failing_primary_hands_traffic_to_a_cold_fallback_and_back(cluster, namespace, operator):
    models_volume(cluster, namespace)
    fallback = {
        "model": {"source": {"hf": {"repo": "org/small-model"}}},
        "replicas": 1,
        "warm": False,
        "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
        "promoteAfterSeconds": 2,
        "demoteAfterSeconds": 6,
    }
    cluster.apply(llmdeployment("fb", replicas=2, fallback=fallback), namespace=namespace)
    wait_condition(cluster, namespace, "fb", "Ready", "True")
    wait_condition(cluster, namespace, "fb", "FallbackActive", "False", "PrimaryServing")
    assert cluster.get("deployment", "fb-fallback", namespace)["spec"]["replicas"] == 0, "cold"
    assert service_tier(cluster, namespace, "fb") == "primary"

    oom, crashing = sorted(p["metadata"]["name"] for p in pods(cluster, namespace, "primary"))
    cluster.make_pod_oom_killed(oom, namespace)
    cluster.make_pod_crash_loop(crashing, namespace)
    degraded = cluster.wait_for(
        lambda: (found := condition(cluster, namespace, "fb", "Degraded"))
        and crashing in found["message"] and oom in found["message"] and found,
        what="Degraded to name both failing pods",
    )  # fmt: skip
    assert degraded["reason"] == "OOMKilled", "the worse problem names the condition"
    assert "resources.memory" in degraded["message"] and "keeps failing" in degraded["message"]
    promoted = wait_condition(cluster, namespace, "fb", "FallbackActive", "True", timeout=60)
    assert promoted["reason"] == "PrimaryUnavailable"
    assert service_tier(cluster, namespace, "fb") == "fallback"
    current = status(cluster, namespace, "fb")
    assert current["activeTier"] == "fallback" and current["fallbackReadyReplicas"] == 1
    assert cluster.get("deployment", "fb-fallback", namespace)["spec"]["replicas"] == 1
    assert condition(cluster, namespace, "fb", "Ready")["status"] == "True", "fallback serves"
    table = cluster.kubectl("get", "llmd", "fb", f"-n={namespace}", "--no-headers").stdout.split()
    assert table[1] == "True" and table[3:5] == ["Degraded", "fallback"]

    cluster.clear_fault(oom, namespace)
    cluster.clear_fault(crashing, namespace)
    pending = wait_condition(cluster, namespace, "fb", "FallbackActive", "True", "DemotionPending")
    recovered_at = time.monotonic()
    assert service_tier(cluster, namespace, "fb") == "fallback", "no switch back before 6 s"
    wait_condition(
        cluster, namespace, "fb", "FallbackActive", "False", "PrimaryServing", timeout=60
    )
    assert time.monotonic() - recovered_at >= 6 - 2, pending["message"]  # 1 s status rounding
    assert service_tier(cluster, namespace, "fb") == "primary"
    cluster.wait_for(
        lambda: cluster.get("deployment", "fb-fallback", namespace)["spec"]["replicas"] == 0,
        what="the cold fallback to scale back to zero",
    )
    reasons = [(e["type"], e["reason"]) for e in events(cluster, namespace, "fb")]
    for expected in [("Warning", "OOMKilled"), ("Warning", "PrimaryUnavailable"),
                     ("Normal", "DemotionPending"), ("Normal", "PrimaryServing")]:  # fmt: skip
        assert expected in reasons, (expected, reasons)


def test_gpu_quota_too_small_is_reported_with_numbers(cluster, namespace, operator):
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpus"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "3"}},
    }
    cluster.apply(quota, namespace=namespace)
    models_volume(cluster, namespace)
    big = llmdeployment("big", replicas=2, resources={"gpus": 2}, engine={"tensorParallelSize": 2})
    cluster.apply(big, namespace=namespace)
    exceeded = wait_condition(
        cluster, namespace, "big", "QuotaExceeded", "True", "GPUQuotaExceeded"
    )
    message = exceeded["message"]
    facts = ["needs 4 GPUs", "2 primary x 2", "ResourceQuota gpus allows 3", "at least 4"]
    for fact in [*facts, f"namespace {namespace}"]:
        assert fact in message, (fact, message)
    gpus = status(cluster, namespace, "big")["gpus"]
    assert (gpus["quota"], gpus["primary"], gpus["surge"]) == (3, 4, 0)
    assert gpus["headroom"] < 0
    degraded = wait_condition(cluster, namespace, "big", "Degraded", "True", "FailedCreate")
    assert "exceeded quota" in degraded["message"]
    assert any(e["reason"] == "GPUQuotaExceeded" and e["type"] == "Warning"
               for e in events(cluster, namespace, "big"))  # fmt: skip

    # Enough for the pods but not for a surge pod: fits, and rolls without surge.
    quota["spec"]["hard"]["requests.nvidia.com/gpu"] = "4"
    cluster.apply(quota, namespace=namespace)
    within = wait_condition(cluster, namespace, "big", "QuotaExceeded", "False", "WithinQuota")
    assert "rolling without surge" in within["message"]
    strategy = cluster.get("deployment", "big-primary", namespace)["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    before = cluster.wait_for(
        lambda: (current := status(cluster, namespace, "big")).get("readyReplicas") == 2
        and current["revisions"].get("lastReady"),
        what="both pods once the quota allows them, baked",
    )  # fmt: skip
    patch_spec(cluster, namespace, "big", {"engine": {"maxNumSeqs": 32}})
    cluster.wait_for(
        lambda: (revisions := status(cluster, namespace, "big")["revisions"])["lastReady"]
        not in (None, before) and revisions["lastReady"] == revisions["desired"],
        what="the rollout without surge to finish within quota",
    )  # fmt: skip
    wait_condition(cluster, namespace, "big", "Degraded", "False", "Healthy")
    assert condition(cluster, namespace, "big", "QuotaExceeded")["status"] == "False"


def test_pods_no_node_can_hold_are_reported_unschedulable(cluster, namespace, operator):
    models_volume(cluster, namespace)
    huge = llmdeployment(
        "huge", replicas=1, resources={"gpus": 8}, engine={"tensorParallelSize": 8}
    )
    cluster.apply(huge, namespace=namespace)
    degraded = wait_condition(cluster, namespace, "huge", "Degraded", "True", "Unschedulable")
    [pod] = pods(cluster, namespace)
    assert pod["metadata"]["name"] in degraded["message"]
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    assert condition(cluster, namespace, "huge", "Ready")["status"] == "False"


SECRET_KEY = {"name": "s", "key": "k"}
INVALID = [
    (
        {"model": {"name": "m", "source": {"pvc": {"claimName": "a"}, "hf": {"repo": "o/r"}}}},
        "exactly one model source must be set: pvc, hf or uri",
    ),
    ({"rollout": {"maxSurge": 0, "maxUnavailable": 0}}, "cannot both be 0"),
    # A pod's GPUs all serve its one model: tensorParallelSize 1 with 2 would idle one.
    ({"resources": {"gpus": 2}},
     "spec.engine.tensorParallelSize: Invalid value: engine.tensorParallelSize must equal"
     " resources.gpus (a worker splits its model across all its GPUs)"),
    ({"resources": {"gpus": 4}, "engine": {"tensorParallelSize": 2}},
     "engine.tensorParallelSize must equal resources.gpus"),
    ({"resources": {"gpus": 0}, "engine": {"tensorParallelSize": 2}},
     "and be 1 when resources.gpus is 0"),
    ({"fallback": {"model": {"source": {"hf": {"repo": "o/r"}}}, "resources": {"gpus": 2}}},
     "fallback.engine.tensorParallelSize must equal fallback.resources.gpus"),
    (
        {
            "fallback": {
                "model": {"source": {"hf": {"repo": "o/r"}}},
                "promoteAfterSeconds": 60,
                "demoteAfterSeconds": 10,
            }
        },
        "fallback.demoteAfterSeconds must be at least fallback.promoteAfterSeconds",
    ),
    (
        {
            "replicas": 1,
            "fallback": {"model": {"source": {"hf": {"repo": "o/r"}}}, "minPrimaryReady": 2},
        },
        "fallback.minPrimaryReady cannot exceed replicas",
    ),
    (
        {"model": {"name": "m", "source": {"pvc": {"claimName": "a", "path": "../etc"}}}},
        "path must be relative to the volume and must not contain '..'",
    ),
    ({"model": {"name": "m", "source": {"uri": "ftp://host/m.tar"}}}, "spec.model.source.uri"),
    ({"engine": {"dtype": "int4"}}, 'Unsupported value: "int4"'),
    ({"engine": {"kvCacheDtype": "fp16"}}, 'Unsupported value: "fp16"'),
    ({"resources": {"gpus": 0}, "engine": {"quantization": "fp8"}},
     "spec.engine.quantization: Invalid value: engine.quantization fp8 runs on GPUs"
     " only (compute capability 8.9 or later): set resources.gpus, or quantization none"),
    ({"fallback": {"model": {"source": {"hf": {"repo": "o/r"}}}, "resources": {"gpus": 0},
                   "engine": {"quantization": "fp8"}}},
     "fallback.engine.quantization fp8 runs on GPUs only (compute capability 8.9 or later): set"
     " fallback.resources.gpus, or quantization none"),
    ({"engine": {"gpuMemoryUtilization": 1.5}}, "gpuMemoryUtilization"),
    ({"replicas": 100}, "spec.replicas"),
    ({"enigne": {}}, 'unknown field "spec.enigne"'),
    # Accepted before, then refused on the Deployment or pod: now refused up front.
    ({"resources": {"cpu": "1.2.3"}}, "spec.resources.cpu"),
    ({"resources": {"memory": "1..5Gi"}}, "must be a Kubernetes quantity"),
    ({"resources": {"tolerations": [{"key": "gpu type", "operator": "Exists"}]}},
     "spec.resources.tolerations[0].key"),
    ({"resources": {"tolerations": [{"value": "x"}]}}, "empty key must use operator Exists"),
    ({"resources": {"tolerations": [{"key": "k", "tolerationSeconds": 5}]}},
     "tolerationSeconds needs effect NoExecute"),
    ({"resources": {"nodeSelector": {"pool": "a100 80g"}}}, "spec.resources.nodeSelector.pool"),
    ({"resources": {"nodeSelector": {"gpu pool": "a"}}}, "must be a valid label/annotation key"),
    ({"podAnnotations": {"scrape me": "true"}}, "must be a valid label/annotation key"),
    ({"image": "registry.local/pagoda worker:1"}, "spec.image"),
    ({"fallback": {"model": {"source": {"hf": {"repo": "o/r"}}}, "image": "a b"}},
     "spec.fallback.image"),
    ({"rollout": {"progressDeadlineSeconds": 20, "minReadySeconds": 30}},
     "minReadySeconds must be less than rollout.progressDeadlineSeconds"),
    ({"env": [{"name": "HOME", "value": "/root"}]}, "spec.env cannot set"),
    ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "Duplicate value"),
    ({"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": SECRET_KEY}}]},
     "exactly one of value or valueFrom"),
    ({"env": [{"name": "1A", "value": "1"}]}, "spec.env[0].name"),
    ({"model": {"name": "m", "source": {"pvc": {"claimName": "a"}, "sha256": "0" * 64}}},
     "only allowed with source.uri"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "says"), INVALID, ids=[says[:40] for _, says in INVALID])
def test_invalid_specs_are_rejected_by_the_apiserver(cluster, namespace, operator, spec, says):
    result = cluster.try_kubectl(
        "apply", f"-n={namespace}", "-f", "-", input=_yaml(llmdeployment("bad", **spec))
    )
    assert result.returncode != 0, f"accepted: {spec}"
    assert says in result.stderr, result.stderr
    assert cluster.try_kubectl("get", "llmd/bad", f"-n={namespace}").returncode != 0


def engine_settings(cluster, namespace: str, name: str) -> dict[str, dict]:
    """Each tier's engine.json, from the engine ConfigMaps the operator wrote."""
    found = cluster.get("configmaps", namespace=namespace)["items"]
    return {
        cm["metadata"]["labels"]["pagoda.dev/tier"]: json.loads(cm["data"]["engine.json"])
        for cm in found
        if cm["metadata"].get("labels", {}).get("pagoda.dev/deployment") == name
    }


def test_fp8_settings_with_a_gpu_reach_the_engine_config(cluster, namespace, operator):
    """The other side of the FP8 rule: with a GPU both settings pass; an FP8 KV cache alone
    runs on CPU too; an unset one gets the CRD's default, which engine.json leaves out."""
    models_volume(cluster, namespace)
    fallback = {
        "model": {"source": {"hf": {"repo": "org/small"}}},
        "resources": {"gpus": 0},
        "engine": {"kvCacheDtype": "fp8"},
    }
    fp8 = {"quantization": "fp8", "kvCacheDtype": "fp8"}
    manifest = llmdeployment(
        "fp8", replicas=1, resources={"gpus": 1}, engine=fp8, fallback=fallback
    )
    cluster.apply(manifest, namespace=namespace)
    stored = cluster.get("llmdeployment", "fp8", namespace)["spec"]
    assert stored["fallback"]["engine"]["quantization"] == "none"

    settings = cluster.wait_for(
        lambda: len(found := engine_settings(cluster, namespace, "fp8")) == 2 and found,
        what="the engine ConfigMaps of both tiers",
    )
    primary, cpu = settings["primary"], settings["fallback"]
    assert (primary["quantization"], primary["kv_cache_dtype"]) == ("fp8", "fp8")
    assert cpu["kv_cache_dtype"] == "fp8" and "quantization" not in cpu


def test_tensor_parallelism_gets_the_pods_gpus_and_shared_memory(cluster, namespace, operator):
    """The other side of the tensor parallelism rule: gpus 2 with tensorParallelSize 2 passes;
    the pod asks for both GPUs, the worker is told to split its model across them, and NCCL
    between its processes gets a /dev/shm larger than the runtime's."""
    models_volume(cluster, namespace)
    manifest = llmdeployment(
        "tp", replicas=1, resources={"gpus": 2}, engine={"tensorParallelSize": 2}
    )
    cluster.apply(manifest, namespace=namespace)
    settings = cluster.wait_for(
        lambda: engine_settings(cluster, namespace, "tp"), what="the engine ConfigMap"
    )
    assert settings["primary"]["tensor_parallel_size"] == 2

    [pod] = cluster.wait_for(lambda: pods(cluster, namespace), what="the worker pod")
    [container] = pod["spec"]["containers"]
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "2"
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    wait_condition(cluster, namespace, "tp", "Ready", "True")


def test_invalid_name_is_rejected(cluster, namespace, operator):
    long_name = "a" * 51
    result = cluster.try_kubectl(
        "apply", f"-n={namespace}", "-f", "-", input=_yaml(llmdeployment(long_name))
    )
    assert result.returncode != 0
    assert "metadata.name must be a DNS-1035 label of at most 50 characters" in result.stderr


def _yaml(obj: dict) -> str:
    return yaml.safe_dump(obj)
