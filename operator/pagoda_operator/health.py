"""Why worker pods are not serving, read from what the kubelet and scheduler report."""

from __future__ import annotations

from dataclasses import dataclass

# Most severe first: the Degraded condition's reason is the worst problem found.
SEVERITY = (
    "Unschedulable",
    "ImagePullBackOff",
    "ConfigError",
    "OOMKilled",
    "CrashLoopBackOff",
    "ReadinessFailing",
)
_IMAGE_PULL = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
_CONFIG = ("CreateContainerConfigError", "CreateContainerError")


@dataclass(frozen=True)
class PodProblem:
    pod: str
    reason: str
    message: str


def pod_problem(pod: dict) -> PodProblem | None:
    """The one thing that most keeps this pod from serving, or None if nothing does (it is
    ready, still starting, or on its way out)."""
    name = pod["metadata"]["name"]
    if pod["metadata"].get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        why = scheduled.get("message", "")
        return PodProblem(
            name,
            "Unschedulable",
            f"pod {name} cannot be scheduled: {why}".rstrip(": ") + f" ({_scheduling_hint(why)})",
        )
    found = [
        problem
        for kind in ("initContainerStatuses", "containerStatuses")
        for container in status.get(kind) or []
        if (problem := _container_problem(name, container)) is not None
    ]
    if found:
        return min(found, key=lambda p: SEVERITY.index(p.reason))
    ready = conditions.get("Ready", {})
    started = all(c.get("started", True) for c in status.get("containerStatuses") or [])
    if status.get("phase") == "Running" and ready.get("status") == "False" and started:
        detail = ready.get("message") or "readiness probe failing"
        return PodProblem(
            name,
            "ReadinessFailing",
            f"pod {name} is running but not ready ({detail}): GET /ready fails; see"
            f" kubectl logs {name}",
        )
    return None


def pod_crash(pod: dict) -> str | None:
    """Whether a container of this pod has restarted (crashed, or killed by a probe): why, in
    words, or None."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        restarts = container.get("restartCount", 0)
        if restarts:
            died = (container.get("lastState") or {}).get("terminated") or {}
            how = died.get("reason") or "unknown reason"
            return (
                f"container {container['name']} of pod {pod['metadata']['name']} restarted"
                f" {restarts} time{'' if restarts == 1 else 's'} (last: {how}, exit code"
                f" {died.get('exitCode', 'unknown')})"
            )
    return None


def _scheduling_hint(why: str) -> str:
    if "persistentvolumeclaim" in why.lower():
        return "check that the PersistentVolumeClaim of spec.model.source.pvc exists and is bound"
    return "check resources.gpus, nodeSelector and tolerations against the nodes"


def _container_problem(pod: str, container: dict) -> PodProblem | None:
    if container.get("ready"):
        return None  # whatever happened before (lastState), it serves now
    name = container["name"]
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    died = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    restarts = container.get("restartCount", 0)
    reason = waiting.get("reason")
    if reason in _IMAGE_PULL:
        return PodProblem(
            pod,
            "ImagePullBackOff",
            f"pod {pod} cannot pull the image of container {name}:"
            f" {waiting.get('message') or reason} (check spec.image and pull secrets)",
        )
    if reason in _CONFIG:
        return PodProblem(
            pod,
            "ConfigError",
            f"container {name} of pod {pod} cannot be created: {waiting.get('message') or reason}"
            " (check the Secrets and PersistentVolumeClaim the spec names)",
        )
    if died.get("reason") == "OOMKilled":
        return PodProblem(
            pod,
            "OOMKilled",
            f"container {name} of pod {pod} was OOMKilled ({restarts} restarts): raise"
            " resources.memory, or lower engine.maxNumSeqs or engine.maxModelLen",
        )
    # Between two crashes the container runs again, not yet started: still crash-looping, or
    # Degraded would flip to Healthy and back (and post two Events) on every restart.
    restarting = restarts > 0 and died and not container.get("started", True)
    if reason == "CrashLoopBackOff" or restarting:
        code = died.get("exitCode", "unknown")
        return PodProblem(
            pod,
            "CrashLoopBackOff",
            f"container {name} of pod {pod} keeps crashing ({restarts} restarts, last exit code"
            f" {code}): see kubectl logs {pod} -c {name} --previous",
        )
    return None
