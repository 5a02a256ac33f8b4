"""How the gateway fares, from its Deployment and pods: what the Service sends clients to, the
GatewayReady condition, and what Ready says once every request goes through the gateway."""

from __future__ import annotations

from dataclasses import dataclass

from .api.spec import GatewaySpec
from .api.status import ServiceTarget
from .health import SEVERITY, pod_problem
from .naming import LABEL_GATEWAY
from .observed import DeploymentState
from .verdict import Verdict, count

MAX_LISTED_PROBLEMS = 3
NO_GATEWAY = Verdict(
    False,
    "NoGateway",
    "no gateway is configured (spec.gateway): the Service sends clients to the serving tier's"
    " pods directly",
)


@dataclass(frozen=True)
class GatewayHealth:
    replicas: int  # gateway pods that exist
    ready: int
    verdict: Verdict  # the GatewayReady condition
    troubled: bool  # a gateway pod reports a problem, or pods cannot be created


def decide_service_target(
    gateway: GatewaySpec | None, ready: int, previous: ServiceTarget
) -> ServiceTarget:
    """The Service turns to the gateway once a gateway pod is ready: until then the workers
    serve directly, so turning a gateway on for a live deployment is no outage. It never turns
    back while spec.gateway is set: that would bypass the tenants' keys and limits."""
    if gateway is None:
        return "workers"
    return "gateway" if ready or previous == "gateway" else "workers"


def gateway_health(
    name: str,
    gateway: GatewaySpec | None,
    found: DeploymentState | None,
    pods: list[dict],
    target: ServiceTarget,
) -> GatewayHealth:
    if gateway is None:
        return GatewayHealth(0, 0, NO_GATEWAY, troubled=False)
    replicas, ready = (found.replicas, found.ready) if found else (0, 0)
    problems = sorted(
        filter(None, map(pod_problem, pods)), key=lambda p: (SEVERITY.index(p.reason), p.pod)
    )
    lines = [problem.message for problem in problems]
    if found and found.replica_failure:
        lines.append(f"cannot create gateway pods: {found.replica_failure}")
    shown = "; ".join(lines[:MAX_LISTED_PROBLEMS])
    if ready:
        message = f"{ready}/{gateway.replicas} gateway pods ready"
        if gateway.tenants:
            message += f"; each enforces 1/{ready} of every tenant limit"
        if shown:
            message += f"; {shown}"
        return GatewayHealth(replicas, ready, Verdict(True, "Serving", message), bool(lines))
    reason = problems[0].reason if problems else "FailedCreate" if lines else "NoReadyPods"
    detail = shown or f"it is starting; see kubectl describe pods -l {LABEL_GATEWAY}={name}"
    if target == "gateway":
        effect = "all traffic goes through the gateway, so nothing is served"
    else:
        effect = "the Service sends clients to the workers directly until one is"
    message = f"no gateway pod is ready (0/{gateway.replicas}) and {effect}: {detail}"
    return GatewayHealth(replicas, ready, Verdict(False, reason, message), bool(lines))


def through_gateway(ready: Verdict, gateway: GatewayHealth, target: ServiceTarget) -> Verdict:
    """Ready with the gateway in the path: the workers serve only while a gateway pod is ready
    too. Without a ready worker, the workers' verdict says why; before the Service turns to the
    gateway, the workers serve directly."""
    if gateway.verdict is NO_GATEWAY or not ready.status:
        return ready
    if target == "workers":
        return Verdict(
            True, ready.reason, f"{ready.message}; directly, until a gateway pod is ready"
        )
    serving = ready.message.split(";")[0]
    if gateway.ready:
        via = count(gateway.ready, "ready gateway pod")
        return Verdict(True, ready.reason, f"{ready.message}; through {via}")
    return Verdict(
        False,
        "GatewayNotReady",
        f"{serving}, but no gateway pod is ready and all traffic goes through the gateway; see"
        " the GatewayReady condition",
    )
