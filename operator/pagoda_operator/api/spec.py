"""The LLMDeployment spec: the one definition behind the CRD schema and the operator's parsing.

Field docstrings become the CRD's descriptions (so `kubectl explain` shows them); pydantic bounds
become OpenAPI bounds; `x-kubernetes-validations` hold CEL rules the apiserver enforces.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .base import ApiModel, cel, first_repeated, validations
from .env import Env
from .formats import (
    DNS_SUBDOMAIN,
    QUALIFIED_NAME,
    AnnotationMap,
    Image,
    LabelMap,
    LabelValue,
    Quantity,
)

DEFAULT_IMAGE = "pagoda-worker:0.1.0"
# The gateway needs no torch: the slim operator image runs `pagoda gateway` too.
DEFAULT_GATEWAY_IMAGE = "pagoda-operator:0.1.0"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
UNIQUE_TENANTS_MESSAGE = "gateway.tenants must have unique names"
SHA256_MESSAGE = "source.sha256 is only allowed with source.uri: it checks the downloaded archive"


class PvcSource(ApiModel):
    """Weights already on a PersistentVolumeClaim in the LLMDeployment's namespace."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.path.startsWith('/') && !self.path.split('/').exists(p, p == '..')",
                "path must be relative to the volume and must not contain '..'",
                ".path",
            )
        )
    )

    claim_name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the PersistentVolumeClaim. It is mounted read-only."""
    path: str = Field("", max_length=1024)
    """Folder inside the volume that holds the Hugging Face-format model (config.json,
    *.safetensors, tokenizer files). Empty means the volume's root."""


class HfTokenSecret(ApiModel):
    """A Secret key holding a Hugging Face access token."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Secret in the LLMDeployment's namespace."""
    key: str = Field("token", min_length=1, max_length=253)
    """Key inside the Secret whose value is the token."""


class HuggingFaceSource(ApiModel):
    """A Hugging Face Hub repository, downloaded by an init container into an emptyDir."""

    repo: str = Field(max_length=200, pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
    """Repository id, `owner/name`, e.g. `Qwen/Qwen2.5-0.5B-Instruct`."""
    revision: str = Field("main", min_length=1, max_length=255, pattern=r"^[\w./-]+$")
    """Branch, tag or commit to download. Pin a commit for reproducible rollouts."""
    token_secret: HfTokenSecret | None = None
    """Secret with an access token, for gated or private repositories."""


class ModelSource(ApiModel):
    """Where the weights come from: exactly one of pvc, hf or uri."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "[has(self.pvc), has(self.hf), has(self.uri)].filter(x, x).size() == 1",
                "exactly one model source must be set: pvc, hf or uri",
            ),
            cel("!has(self.sha256) || has(self.uri)", SHA256_MESSAGE, ".sha256"),
        )
    )

    pvc: PvcSource | None = None
    """Use a model folder on a PersistentVolumeClaim."""
    hf: HuggingFaceSource | None = None
    """Download a Hugging Face Hub repository at pod start."""
    uri: str | None = Field(None, max_length=2048, pattern=r"^https?://\S+\.(tar|tar\.gz|tgz)$")
    """Download and unpack a tar archive (.tar, .tar.gz or .tgz) over HTTP(S) at pod start. The
    archive's top level must be the model folder's contents."""
    # Left out of dumps while unset, so the revision hash of a spec without it stays the same.
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", exclude_if=lambda v: v is None)
    """SHA-256 of the uri archive, 64 lowercase hex digits (`sha256sum` prints it). The download
    is checked against it before unpacking; a mismatch fails the fetch-model init container
    and status says so."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if [self.pvc, self.hf, self.uri].count(None) != 2:
            raise ValueError("exactly one model source must be set: pvc, hf or uri")
        if self.sha256 is not None and self.uri is None:
            raise ValueError(SHA256_MESSAGE)
        return self


class ModelSpec(ApiModel):
    """The primary model: its public name and its weights."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][\w.:/-]*$")
    """Name clients send as `model` in OpenAI API requests (the server's served model name)."""
    source: ModelSource
    """Where the weights come from."""


class FallbackModelSpec(ApiModel):
    """The fallback model's weights; it is served under the primary model's name, so clients
    need no change when traffic moves to it."""

    source: ModelSource
    """Where the fallback weights come from."""


def fp8_weights_need_gpus(tier: str) -> dict:
    """The rule for a tier's engine and resources; `tier`: "" (primary) or "fallback."."""
    return cel(
        "self.engine.quantization != 'fp8' || self.resources.gpus >= 1",
        f"{tier}engine.quantization fp8 runs on GPUs only (compute capability 8.9 or later): set"
        f" {tier}resources.gpus, or quantization none",
        ".engine.quantization",
    )


def tensor_parallel_uses_all_gpus(tier: str) -> dict:
    """The rule for a tier's engine and resources; `tier`: "" (primary) or "fallback."."""
    return cel(
        "self.engine.tensorParallelSize == (self.resources.gpus == 0 ? 1 : self.resources.gpus)",
        f"{tier}engine.tensorParallelSize must equal {tier}resources.gpus (a worker splits its"
        f" model across all its GPUs), and be 1 when {tier}resources.gpus is 0",
        ".engine.tensorParallelSize",
    )


class EngineSpec(ApiModel):
    """Engine settings, passed to the worker as /etc/pagoda/engine.json. Changing any of them
    rolls the pods."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights and activations dtype; `auto` keeps the checkpoint's."""
    max_model_len: int | None = Field(None, ge=1, le=1048576)
    """Context window in tokens; unset means the model's own."""
    max_num_seqs: int = Field(256, ge=1, le=4096)
    """Most sequences batched in one engine step."""
    max_num_batched_tokens: int = Field(8192, ge=1, le=1048576)
    """Token budget of one engine step (prefill chunks plus decodes)."""
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Fraction of GPU memory the worker may use for weights and KV cache."""
    block_size: int = Field(16, ge=1, le=256)
    """Tokens per paged KV-cache block."""
    prefix_caching: bool = True
    """Reuse KV-cache blocks of shared prompt prefixes."""
    enforce_eager: bool = False
    """Disable CUDA graphs (slower decode, faster start)."""
    attention_backend: Literal["auto", "reference", "triton"] = "auto"
    """Attention kernels: `auto` picks Triton on GPUs and the PyTorch reference elsewhere."""
    tensor_parallel_size: int = Field(1, ge=1, le=8)
    """GPUs one model replica is split across, Megatron-style: each layer's weights are sharded
    across that many GPUs of one pod (so of one node), one worker process per GPU. Must equal
    resources.gpus, since a pod asks for exactly the GPUs its engine uses; 1 on CPU
    (resources.gpus 0)."""
    # Both left out of dumps at their defaults, so the revision hash (and the immutable engine
    # ConfigMap) of a spec without them stays the same.
    quantization: Literal["none", "fp8"] = Field("none", exclude_if=lambda v: v == "none")
    """Weight quantization. `fp8` quantizes the weights to FP8 (e4m3) as they load, one scale per
    output channel, and the activations per token at run time: about half the weight memory of
    bfloat16, so more room for the KV cache, at a small loss of accuracy. Needs GPUs of compute
    capability 8.9 or later (Ada, Hopper) and a bfloat16 or float16 model (see dtype); the worker
    refuses to start elsewhere. Checkpoints already in FP8 (compressed-tensors format) are
    detected and run in FP8 whatever this says."""
    kv_cache_dtype: Literal["auto", "fp8"] = Field("auto", exclude_if=lambda v: v == "auto")
    """KV-cache dtype: `auto` keeps the model's dtype; `fp8` stores keys and values in FP8 (e4m3),
    twice the tokens in the same memory, at a small loss of accuracy. Scales come from the
    checkpoint when it has them, else 1.0. On GPUs it needs compute capability 8.9 or later (Ada,
    Hopper); on CPU (resources.gpus 0) the reference attention supports it."""

    def engine_json(self) -> dict:
        """The worker's engine.json: EngineConfig field names, unset values left out."""
        settings = {
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "block_size": self.block_size,
            "enable_prefix_caching": self.prefix_caching,
            "enforce_eager": self.enforce_eager,
            "attention_backend": self.attention_backend,
        }
        # Settings added later are absent at their defaults, so an unchanged spec keeps the
        # engine.json of its (immutable) ConfigMap. The FP8 ones are dumped as for the revision
        # hash, which leaves them out; tensor_parallel_size, always in the hash, is left out here.
        if self.tensor_parallel_size > 1:
            settings["tensor_parallel_size"] = self.tensor_parallel_size
        fp8 = self.model_dump(include={"quantization", "kv_cache_dtype"})
        return {key: value for key, value in settings.items() if value is not None} | fp8


class Toleration(ApiModel):
    """A pod toleration, as in the core Pod API (and validated as it validates one)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.operator != 'Exists' || self.value == ''",
                "a toleration with operator Exists must not set a value",
            ),
            cel(
                "self.key != '' || self.operator == 'Exists'",
                "a toleration with an empty key must use operator Exists (it matches every taint)",
            ),
            cel(
                "!has(self.tolerationSeconds) || self.effect == 'NoExecute'",
                "a toleration's tolerationSeconds needs effect NoExecute",
            ),
        )
    )

    key: str = Field("", max_length=316, pattern=f"^$|{QUALIFIED_NAME}")
    """Taint key to tolerate (a label key); empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Equal matches key and value; Exists matches the key alone."""
    value: LabelValue = ""
    """Taint value to match when operator is Equal (a label value)."""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    """Taint effect to match; empty matches every effect."""
    toleration_seconds: int | None = Field(None, ge=0)
    """For NoExecute: how long the pod stays bound after the taint appears."""

    @model_validator(mode="after")
    def _as_the_pod_api_validates(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists must not set a value")
        if not self.key and self.operator != "Exists":
            raise ValueError(
                "a toleration with an empty key must use operator Exists (it matches every taint)"
            )
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("a toleration's tolerationSeconds needs effect NoExecute")
        return self


class ResourcesSpec(ApiModel):
    """What each worker pod asks for, and where it may run."""

    gpus: int = Field(1, ge=0, le=8)
    """GPUs (nvidia.com/gpu) per pod, all of them used by one engine (engine.tensorParallelSize
    equals it), so at most 8, one node's; 0 runs the engine on CPU."""
    cpu: Quantity = "2"
    """CPU request per pod (a Kubernetes quantity)."""
    memory: Quantity = "16Gi"
    """Memory request and limit per pod (a Kubernetes quantity). Pods that exceed it are
    OOMKilled, which status reports."""
    node_selector: LabelMap = Field(default_factory=dict)
    """Node labels a worker pod's node must have (label keys and values)."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints worker pods tolerate, e.g. the GPU nodes' taint."""


class RolloutSpec(ApiModel):
    """How a change of model, engine, image or resources replaces pods. A new pod counts only
    once it passes readiness (model loaded, canary generation passed)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.maxSurge > 0 || self.maxUnavailable > 0",
                "rollout.maxSurge and rollout.maxUnavailable cannot both be 0: no pod could ever"
                " be replaced",
            ),
            cel(
                "self.minReadySeconds < self.progressDeadlineSeconds",
                "rollout.minReadySeconds must be less than rollout.progressDeadlineSeconds",
            ),
        )
    )

    max_surge: int = Field(1, ge=0, le=64)
    """Extra pods allowed above replicas during a rollout. Dropped to 0 (with maxUnavailable at
    least 1) when the surge would exceed the namespace's GPU quota; status says so."""
    max_unavailable: int = Field(0, ge=0, le=64)
    """Pods that may be unready during a rollout."""
    progress_deadline_seconds: int = Field(1800, ge=5, le=86400)
    """How long a rollout may go without progress before it is rolled back to the last revision
    that became Ready. Leave room for image pulls and model loading."""
    min_ready_seconds: int = Field(30, ge=0, le=3600)
    """Bake time: how long a new pod must stay ready before it counts as available, and a
    revision becomes the last ready one (where rollbacks return) only once all its pods have.
    A pod of a revision that has not become ready yet and crashes rolls it back at once."""

    @model_validator(mode="after")
    def _bake_within_deadline(self) -> RolloutSpec:
        if self.min_ready_seconds >= self.progress_deadline_seconds:
            raise ValueError(
                "rollout.minReadySeconds must be less than rollout.progressDeadlineSeconds"
            )
        return self


class ApiKeySecret(ApiModel):
    """A Secret key holding the API key clients must send as a bearer token."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Secret in the LLMDeployment's namespace."""
    key: str = Field("key", min_length=1, max_length=253)
    """Key inside the Secret whose value is the API key."""


class TenantSpec(ApiModel):
    """One tenant of the gateway: its API key and its limits. A request over a limit gets 429
    with Retry-After; an unset limit is unlimited."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    """Tenant name (a DNS label), as it appears in the gateway's metrics and access log."""
    api_key_secret: ApiKeySecret
    """Secret key holding this tenant's API key, which its clients send as a bearer token. The
    key lives only in the Secret: the gateway reads the mounted file, keeps its SHA-256, and
    picks up a rotated key without a restart."""
    requests_per_minute: int | None = Field(None, ge=1)
    """Requests per minute. Limits are per tenant, split evenly across the ready gateway
    replicas (each enforces its share)."""
    tokens_per_minute: int | None = Field(None, ge=1)
    """Prompt plus completion tokens per minute, reserved at admission from max_tokens and
    settled from real usage; split across the ready gateway replicas like every limit."""
    concurrent_requests: int | None = Field(None, ge=1)
    """Requests in flight at once; split across the ready gateway replicas like every limit."""


class HoldQueueSpec(ApiModel):
    """Where requests wait while no worker pod of either tier is ready (scale from zero, all
    pods starting)."""

    size: int = Field(256, ge=0, le=100000)
    """Requests each gateway replica holds at most; more get 503 with Retry-After. 0 answers
    503 at once."""
    timeout_seconds: int = Field(30, ge=1, le=600)
    """How long a held request waits for a ready worker pod before it gets 503 with
    Retry-After."""


class GatewayResources(ApiModel):
    """What each gateway pod asks for (it needs no GPU)."""

    cpu: Quantity = "1"
    """CPU request per gateway pod (a Kubernetes quantity)."""
    memory: Quantity = "512Mi"
    """Memory request and limit per gateway pod (a Kubernetes quantity)."""


def _unique_tenants(tenants: list[TenantSpec]) -> list[TenantSpec]:
    if (twice := first_repeated(t.name for t in tenants)) is not None:
        raise ValueError(f"{UNIQUE_TENANTS_MESSAGE}: {twice} appears twice")
    return tenants


class GatewaySpec(ApiModel):
    """The Pagoda gateway in front of the worker pods: the LLMDeployment's Service then sends
    clients to the gateway, which checks tenant keys and limits, keeps prompts with shared
    prefixes and sessions on the same pod, retries on another pod before the first byte, moves
    to the fallback tier at once when the primary has no ready pod, and holds requests while no
    worker is ready. The Service turns to the gateway once a gateway pod is ready (the workers
    serve directly until then; see status.serviceTarget); after that, while no gateway pod is
    ready, nothing is served."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.tenants) || self.tenants.all(t, self.tenants.exists_one(u, u.name =="
                " t.name))",
                UNIQUE_TENANTS_MESSAGE,
                ".tenants",
            )
        )
    )

    replicas: int = Field(2, ge=1, le=16)
    """Gateway pods. Tenant limits are split evenly across the ready ones."""
    image: Image = DEFAULT_GATEWAY_IMAGE
    """Gateway container image: any Pagoda image runs `pagoda gateway`; the operator image
    (docker/operator.Dockerfile) is the small one. Pulled as spec.imagePullPolicy says."""
    tenants: Annotated[list[TenantSpec], AfterValidator(_unique_tenants)] = Field(
        default_factory=list, max_length=64
    )
    """Tenants, each with its own API key and limits. Clients send their tenant's key; the
    gateway accepts no other (spec.serving.apiKeySecret is then only its own key to the
    workers). Empty: clients send spec.serving.apiKeySecret's key, as without a gateway (the
    gateway checks it as tenant `default`, without limits), or no key when that is unset."""
    hold_queue: HoldQueueSpec = HoldQueueSpec()
    """Requests held while no worker pod is ready."""
    resources: GatewayResources = GatewayResources()
    """Resources of each gateway pod."""


class ServingSpec(ApiModel):
    """How the worker serves traffic and how its lifecycle is timed."""

    port: int = Field(8000, ge=1024, le=65535)
    """Port of the OpenAI-compatible HTTP server, in the pod and on the Service."""
    api_key_secret: ApiKeySecret | None = None
    """Require this API key on every request; unset serves without authentication. With
    spec.gateway and no gateway.tenants, clients still send this key (the gateway checks it);
    with tenants, clients send their tenant's key instead and this one is only the gateway's
    credential to the workers."""
    startup_timeout_seconds: int = Field(1800, ge=10, le=86400)
    """How long a starting worker may take to load the model before it is restarted."""
    termination_grace_period_seconds: int = Field(60, ge=5, le=3600)
    """How long a stopping worker may drain in-flight requests before it is killed."""


class FallbackSpec(ApiModel):
    """A second, usually smaller, tier that takes the traffic while the primary cannot."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.demoteAfterSeconds >= self.promoteAfterSeconds",
                "fallback.demoteAfterSeconds must be at least fallback.promoteAfterSeconds, or"
                " traffic would flap between the tiers",
            ),
            tensor_parallel_uses_all_gpus("fallback."),
            fp8_weights_need_gpus("fallback."),
        )
    )

    model: FallbackModelSpec
    """The fallback model's weights."""
    replicas: int = Field(1, ge=1, le=64)
    """Fallback pods while the fallback tier runs."""
    engine: EngineSpec = EngineSpec()
    """Engine settings of the fallback tier."""
    resources: ResourcesSpec = ResourcesSpec()
    """Resources of each fallback pod."""
    image: Image | None = None
    """Worker image of the fallback tier; unset uses spec.image."""
    warm: bool = True
    """Keep the fallback pods running at all times (fast switch, costs GPUs); false starts them
    only when a promotion begins."""
    promote_after_seconds: int = Field(30, ge=1, le=86400)
    """How long the primary must stay below minPrimaryReady ready pods before traffic moves to
    the fallback."""
    demote_after_seconds: int = Field(120, ge=1, le=86400)
    """How long the primary must stay healthy before traffic moves back to it."""
    min_primary_ready: int = Field(1, ge=1, le=64)
    """Ready primary pods below which the primary counts as failing."""


class LLMDeploymentSpec(ApiModel):
    """A served model: worker pods, their rollout, health, fallback and GPU accounting."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            tensor_parallel_uses_all_gpus(""),
            fp8_weights_need_gpus(""),
            cel(
                "!has(self.fallback) || self.fallback.minPrimaryReady <= self.replicas",
                "fallback.minPrimaryReady cannot exceed replicas: the fallback would never hand"
                " traffic back",
            ),
        )
    )

    model: ModelSpec
    """The model to serve."""
    replicas: int = Field(1, ge=0, le=64)
    """Worker pods of the primary tier."""
    image: Image = DEFAULT_IMAGE
    """Worker container image (docker/worker.Dockerfile): [registry/]path[:tag][@digest]."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the worker image."""
    engine: EngineSpec = EngineSpec()
    """Engine settings of the primary tier."""
    resources: ResourcesSpec = ResourcesSpec()
    """Resources of each primary pod."""
    rollout: RolloutSpec = RolloutSpec()
    """How changes roll out, and when they are rolled back."""
    serving: ServingSpec = ServingSpec()
    """Port, authentication and lifecycle timing, shared by both tiers."""
    fallback: FallbackSpec | None = None
    """Optional fallback tier; unset means the primary alone serves."""
    gateway: GatewaySpec | None = None
    """Optional gateway in front of the worker pods: tenant keys and limits, prefix and session
    affinity, retries, instant fallback; unset means the Service selects the serving tier's
    pods directly."""
    pod_annotations: AnnotationMap = Field(default_factory=dict)
    """Extra annotations on every worker pod (both tiers), e.g. for scrapers or meshes. Keys are
    annotation keys; values at most 4096 characters."""
    env: Env = Field(default_factory=list)
    """Environment variables of every worker pod (both tiers), set on the worker and on the
    fetch-model init container: e.g. HF_ENDPOINT for a Hub mirror, HTTPS_PROXY, NCCL or CUDA
    settings. Each entry has a name and a value or a valueFrom (secretKeyRef or
    configMapKeyRef). Changing them rolls the pods."""
