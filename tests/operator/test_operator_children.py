"""Desired children: ConfigMap, Deployments and their pods, Service, PodDisruptionBudget."""

from __future__ import annotations

import json

import pytest
from operator_world import PVC_SOURCE
from pagoda_operator.api.env import OPERATOR_ENV
from pagoda_operator.api.spec import LLMDeploymentSpec, RolloutSpec
from pagoda_operator.api.tier_config import TierConfig
from pagoda_operator.naming import Owner, tier_selector
from pagoda_operator.network import disruption_budget, service
from pagoda_operator.revision import fallback_config, primary_config
from pagoda_operator.strategy import Strategy
from pagoda_operator.workload import (
    EXIT_SECONDS,
    deployment,
    engine_config_map,
    pod_template,
)

OWNER = Owner("team", "demo", "uid-1")
HF_SOURCE = {"hf": {"repo": "org/m", "tokenSecret": {"name": "hf"}}}
URI_SOURCE = {"uri": "https://models.example/m.tar", "sha256": "ab" * 32}
FP8 = {"quantization": "fp8", "kvCacheDtype": "fp8"}
# What the apiserver fills in (CRD defaults) for a spec that leaves the FP8 settings out.
FP8_DEFAULTS = {"quantization": "none", "kvCacheDtype": "auto"}
# One model split across both GPUs of each pod, as the CRD requires of a pod with 2.
TP2 = {"resources": {"gpus": 2}, "engine": {"tensorParallelSize": 2}}
ENV = [
    {"name": "HF_ENDPOINT", "value": "http://mirror.local"},
    {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "url"}}},
]


def spec(**changes) -> LLMDeploymentSpec:
    body = {"model": {"name": "stories", "source": PVC_SOURCE}, "replicas": 2} | changes
    return LLMDeploymentSpec.model_validate(body)


def worker(template: dict) -> dict:
    return template["spec"]["containers"][0]


def test_worker_pod_follows_the_worker_contract():
    config = primary_config(spec(resources={"gpus": 2, "memory": "24Gi"}, engine=TP2["engine"]))
    template = pod_template(OWNER, config)
    container = worker(template)
    assert container["command"] == [
        "pagoda", "serve",
        "--model", "/models/stories260K",
        "--served-model-name", "stories",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--config", "/etc/pagoda/engine.json",
        "--drain-timeout", "55",
    ]  # fmt: skip
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "2"
    assert resources["limits"]["memory"] == "24Gi"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 1800, "the default startup budget covers a 30-minute model load"
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    grace = template["spec"]["terminationGracePeriodSeconds"]
    prestop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert prestop + 55 < grace, "the drain ends before the kubelet kills the server"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("grace_seconds", [5, 6, 60])
def test_prestop_drain_and_exit_fit_the_termination_grace_period(grace_seconds):
    template = pod_template(
        OWNER, primary_config(spec(serving={"terminationGracePeriodSeconds": grace_seconds}))
    )
    container = worker(template)
    command = container["command"]
    drain = int(command[command.index("--drain-timeout") + 1])
    prestop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert drain >= 1
    assert drain >= grace_seconds - EXIT_SECONDS, "the drain gets what the spec grants"
    assert prestop + drain + EXIT_SECONDS <= template["spec"]["terminationGracePeriodSeconds"]


def test_every_container_is_locked_down():
    hf = {"hf": {"repo": "org/m", "tokenSecret": {"name": "hf"}}}
    template = pod_template(OWNER, primary_config(spec(model={"name": "stories", "source": hf})))
    pod = template["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    containers = pod["containers"] + pod["initContainers"]
    assert [c["name"] for c in containers] == ["worker", "fetch-model"]
    for container in containers:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, container["name"]


def test_startup_budget_follows_the_spec():
    config = primary_config(spec(serving={"startupTimeoutSeconds": 3600}))
    startup = worker(pod_template(OWNER, config))["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600


def test_cpu_pods_request_no_gpu():
    resources = worker(pod_template(OWNER, primary_config(spec(resources={"gpus": 0}))))[
        "resources"
    ]
    assert "nvidia.com/gpu" not in resources["requests"]
    assert "nvidia.com/gpu" not in resources["limits"]


@pytest.mark.parametrize(
    ("change", "rolls"),
    [
        ({"engine": {"maxNumSeqs": 64}}, True),
        ({"engine": {"dtype": "bfloat16"}}, True),
        ({"engine": {"quantization": "fp8"}}, True),
        ({"engine": {"kvCacheDtype": "fp8"}}, True),
        ({"engine": FP8_DEFAULTS}, False),
        ({"model": {"name": "other", "source": PVC_SOURCE}}, True),
        ({"model": {"name": "stories", "source": {"hf": {"repo": "org/m"}}}}, True),
        ({"image": "pagoda-worker:0.2.0"}, True),
        (TP2, True),
        ({"podAnnotations": {"a": "b"}}, True),
        ({"replicas": 5}, False),
        ({"rollout": {"maxSurge": 3}}, False),
        ({"fallback": {"model": {"source": PVC_SOURCE}}}, False),
    ],
)
def test_config_hash_in_the_pod_template_rolls_exactly_on_pod_changes(change, rolls):
    before, after = primary_config(spec()), primary_config(spec(**change))
    label = "pagoda.dev/revision"
    template_before = pod_template(OWNER, before)
    template_after = pod_template(OWNER, after)
    assert (
        template_before["metadata"]["labels"][label] != template_after["metadata"]["labels"][label]
    ) is rolls
    assert (template_before != template_after) is rolls


def test_env_and_checksum_changes_are_new_revisions():
    uri = {"name": "m", "source": {"uri": URI_SOURCE["uri"]}}
    revisions = {
        primary_config(spec(**changes)).revision
        for changes in [
            {},
            {"env": ENV},
            {"env": ENV[:1]},
            {"env": [{"name": "HF_ENDPOINT", "value": "http://other.local"}]},
            {"model": uri},
            {"model": uri | {"source": URI_SOURCE}},
        ]
    }
    assert len(revisions) == 6


def test_specs_without_env_checksum_or_fp8_keep_their_revision():
    """Revisions name the ConfigMaps and the last ready one: a field added to the API must not
    change them for specs that leave it unset, or an operator upgrade would look like a new
    rollout of every LLMDeployment. (These are the revisions from before env, sha256 and the
    FP8 settings.)"""
    uri = {"name": "stories", "source": {"uri": "https://x.example/m.tar"}}
    fallback = {"model": {"source": {"hf": {"repo": "org/m"}}}}
    assert primary_config(spec()).revision == "9e5c00a681"
    assert primary_config(spec(engine=FP8_DEFAULTS)).revision == "9e5c00a681"
    assert primary_config(spec(model=uri)).revision == "31bacb9e17"
    assert fallback_config(spec(fallback=fallback)).revision == "59451c84b1"


def test_a_spec_that_splits_its_model_got_a_new_revision_when_workers_began_to():
    """tensorParallelSize above 1 reached no worker until tensor parallelism was built; now it
    changes the pods, so it changes the revision too (3987bb3585 before)."""
    split = spec(engine={"tensorParallelSize": 2}, resources={"gpus": 2})
    assert primary_config(split).revision == "13ae83f60d"


@pytest.mark.parametrize("source", [PVC_SOURCE, HF_SOURCE, URI_SOURCE])
def test_spec_env_reaches_the_worker_and_the_download_after_the_operators_own(source):
    config = primary_config(spec(model={"name": "m", "source": source}, env=ENV))
    template = pod_template(OWNER, config)
    containers = template["spec"]["containers"] + template["spec"].get("initContainers", [])
    assert len(containers) == (1 if source is PVC_SOURCE else 2)
    for container in containers:
        assert container["env"][-2:] == ENV, container["name"]
        assert {e["name"] for e in container["env"][:-2]} <= set(OPERATOR_ENV)


def test_the_fallback_tier_inherits_spec_env():
    fallback = {"model": {"source": HF_SOURCE}}
    template = pod_template(OWNER, fallback_config(spec(env=ENV, fallback=fallback)))
    for container in template["spec"]["containers"] + template["spec"]["initContainers"]:
        assert container["env"][-2:] == ENV, container["name"]


def test_the_reserved_env_names_are_the_ones_the_operator_sets():
    names = set()
    for source in (PVC_SOURCE, HF_SOURCE, URI_SOURCE):
        template = pod_template(OWNER, primary_config(spec(model={"name": "m", "source": source})))
        for container in template["spec"]["containers"] + template["spec"].get(
            "initContainers", []
        ):
            names |= {e["name"] for e in container["env"]}
    assert names == set(OPERATOR_ENV)


@pytest.mark.parametrize("source", [HF_SOURCE, URI_SOURCE])
def test_failed_containers_report_the_end_of_their_log(source):
    template = pod_template(OWNER, primary_config(spec(model={"name": "m", "source": source})))
    for container in template["spec"]["containers"] + template["spec"]["initContainers"]:
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError", container["name"]


def test_engine_config_map_holds_engine_json_and_the_revision():
    config = primary_config(spec(engine={"maxModelLen": 4096, "prefixCaching": False}))
    cm = engine_config_map(OWNER, config)
    assert cm["metadata"]["name"] == f"demo-primary-{config.revision}"
    assert cm["immutable"] is True
    engine = json.loads(cm["data"]["engine.json"])
    assert engine == {
        "attention_backend": "auto",
        "block_size": 16,
        "dtype": "auto",
        "enable_prefix_caching": False,
        "enforce_eager": False,
        "gpu_memory_utilization": 0.9,
        "max_model_len": 4096,
        "max_num_batched_tokens": 8192,
        "max_num_seqs": 256,
    }
    assert TierConfig.model_validate_json(cm["data"]["revision.json"]) == config
    volume = next(
        v for v in pod_template(OWNER, config)["spec"]["volumes"] if v["name"] == "engine-config"
    )
    assert volume["configMap"]["name"] == cm["metadata"]["name"]


def test_fp8_settings_reach_engine_json_and_their_defaults_stay_out():
    """Left out at their defaults, an unchanged spec renders the same engine.json as before
    they existed (its ConfigMap is immutable, so a changed one could not be applied)."""
    before = spec().engine.engine_json()
    assert "quantization" not in before and "kv_cache_dtype" not in before
    assert spec(engine=FP8_DEFAULTS).engine.engine_json() == before
    assert spec(engine=FP8).engine.engine_json() == before | {
        "quantization": "fp8",
        "kv_cache_dtype": "fp8",
    }
    cm = engine_config_map(OWNER, primary_config(spec(engine={"kvCacheDtype": "fp8"})))
    assert json.loads(cm["data"]["engine.json"]) == before | {"kv_cache_dtype": "fp8"}


def test_tensor_parallel_size_reaches_engine_json_and_stays_out_at_1():
    """At 1 it is left out, so a spec without it keeps the engine.json of its immutable
    ConfigMap (and its revision, which always held the field)."""
    before = spec().engine.engine_json()
    assert "tensor_parallel_size" not in before
    assert spec(engine={"tensorParallelSize": 1}).engine.engine_json() == before
    cm = engine_config_map(OWNER, primary_config(spec(**TP2)))
    assert json.loads(cm["data"]["engine.json"]) == before | {"tensor_parallel_size": 2}


def test_engine_json_is_an_engine_config_the_worker_accepts():
    from pagoda_worker.engine.config import EngineConfig

    engine = FP8 | {"maxModelLen": 4096, "tensorParallelSize": 2}
    config = EngineConfig(**spec(engine=engine, resources=TP2["resources"]).engine.engine_json())
    assert (config.quantization, config.kv_cache_dtype) == ("fp8", "fp8")
    assert config.max_model_len == 4096
    assert config.tensor_parallel_size == 2


def shm(template: dict) -> tuple[list[dict], list[dict]]:
    """The pod's /dev/shm volumes, and the worker's mounts of them."""
    volumes = [v for v in template["spec"]["volumes"] if v["name"] == "shm"]
    mounts = [m for m in worker(template)["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    return volumes, mounts


@pytest.mark.parametrize("tier", ["primary", "fallback"])
def test_a_tensor_parallel_pod_asks_for_its_gpus_and_gets_shared_memory(tier):
    """NCCL between the pod's processes needs more /dev/shm than the runtime's 64 MiB."""
    both = spec(**TP2, fallback={"model": {"source": HF_SOURCE}, **TP2})
    config = primary_config(both) if tier == "primary" else fallback_config(both)
    assert config is not None
    template = pod_template(OWNER, config)
    resources = worker(template)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "2"
    assert shm(template) == (
        [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
        [{"name": "shm", "mountPath": "/dev/shm"}],
    )


@pytest.mark.parametrize("gpus", [0, 1])
def test_pods_without_tensor_parallelism_keep_the_runtimes_shared_memory(gpus):
    assert shm(pod_template(OWNER, primary_config(spec(resources={"gpus": gpus})))) == ([], [])


def test_hugging_face_source_downloads_in_an_init_container():
    source = {"hf": {"repo": "Qwen/Qwen2.5-0.5B", "revision": "abc123",
                     "tokenSecret": {"name": "hf"}}}  # fmt: skip
    template = pod_template(OWNER, primary_config(spec(model={"name": "qwen", "source": source})))
    fetch = template["spec"]["initContainers"][0]
    assert fetch["command"][:3] == ["hf", "download", "Qwen/Qwen2.5-0.5B"]
    assert fetch["command"][fetch["command"].index("--revision") + 1] == "abc123"
    token = next(e for e in fetch["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    model = next(v for v in template["spec"]["volumes"] if v["name"] == "model")
    assert model == {"name": "model", "emptyDir": {}}
    assert worker(template)["command"][3] == "/models/model"


def test_uri_source_downloads_and_unpacks_an_archive():
    source = {"uri": "https://models.example/llama.tar.gz"}
    template = pod_template(OWNER, primary_config(spec(model={"name": "m", "source": source})))
    fetch = template["spec"]["initContainers"][0]
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert env["MODEL_URI"] == source["uri"]
    assert "MODEL_SHA256" not in env
    assert "tar -xf" in fetch["command"][-1]
    with_checksum = primary_config(spec(model={"name": "m", "source": URI_SOURCE}))
    fetch = pod_template(OWNER, with_checksum)["spec"]["initContainers"][0]
    assert {"name": "MODEL_SHA256", "value": URI_SOURCE["sha256"]} in fetch["env"]


def test_pvc_source_is_mounted_read_only_without_init_container():
    template = pod_template(OWNER, primary_config(spec()))
    assert "initContainers" not in template["spec"]
    model = next(v for v in template["spec"]["volumes"] if v["name"] == "model")
    assert model["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}


def test_api_key_secret_is_mounted_and_passed():
    config = primary_config(spec(serving={"apiKeySecret": {"name": "keys", "key": "k"}}))
    template = pod_template(OWNER, config)
    assert worker(template)["command"][-2:] == ["--api-key-file", "/etc/pagoda/api-key/key"]
    secret = next(v for v in template["spec"]["volumes"] if v["name"] == "api-key")["secret"]
    assert secret["secretName"] == "keys"
    assert secret["items"] == [{"key": "k", "path": "key"}]


def test_scheduling_constraints_reach_the_pod():
    resources = {
        "nodeSelector": {"gpu": "h100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    template = pod_template(OWNER, primary_config(spec(resources=resources)))
    assert template["spec"]["nodeSelector"] == {"gpu": "h100"}
    assert template["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_deployment_rolls_with_the_given_strategy_deadline_and_bake_time():
    config = primary_config(spec())
    rollout = RolloutSpec(progress_deadline_seconds=900, min_ready_seconds=45)
    obj = deployment(OWNER, config, 3, Strategy(0, 1), rollout)
    assert obj["metadata"]["name"] == "demo-primary"
    assert obj["spec"]["replicas"] == 3
    assert obj["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert obj["spec"]["progressDeadlineSeconds"] == 900
    assert obj["spec"]["minReadySeconds"] == 45
    assert obj["spec"]["selector"]["matchLabels"] == {
        "pagoda.dev/deployment": "demo",
        "pagoda.dev/tier": "primary",
    }
    reference = obj["metadata"]["ownerReferences"][0]
    assert reference["uid"] == "uid-1" and reference["controller"] is True


def test_fallback_serves_under_the_primary_name_with_its_own_model():
    fallback = {
        "model": {"source": {"hf": {"repo": "org/small"}}},
        "resources": {"gpus": 0, "memory": "4Gi"},
    }
    config = fallback_config(spec(fallback=fallback))
    assert config.tier == "fallback"
    assert config.served_name == "stories"
    assert config.image == spec().image
    template = pod_template(OWNER, config)
    assert template["metadata"]["labels"]["pagoda.dev/tier"] == "fallback"
    assert "nvidia.com/gpu" not in worker(template)["resources"]["requests"]
    assert fallback_config(spec()) is None


def test_service_sends_its_port_to_the_pods_named_http_port():
    obj = service(OWNER, 8123, tier_selector("demo", "primary"))
    assert obj["spec"]["type"] == "ClusterIP"
    assert obj["spec"]["ports"] == [
        {"name": "http", "port": 8123, "targetPort": "http", "protocol": "TCP"}
    ]


def test_disruption_budget_covers_both_tiers_one_pod_at_a_time():
    pdb = disruption_budget(OWNER)
    assert pdb["spec"]["selector"]["matchLabels"] == {"pagoda.dev/deployment": "demo"}
    assert pdb["spec"]["maxUnavailable"] == 1
