"""Why worker pods are not serving, read from what the kubelet and scheduler report."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

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
# How much of a failed container's termination message (its log's tail, as the containers use
# terminationMessagePolicy FallbackToLogsOnError) status quotes.
QUOTED_LINES = 2
QUOTED_CHARS = 300


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
        for kind, container in _containers(status)
        if (problem := _container_problem(name, kind, container)) is not None
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
    """Whether a container of this pod (the worker, or the init container that fetches the
    model) has restarted (crashed, or killed by a probe): why, in words, or None."""
    for kind, container in _containers(pod.get("status") or {}):
        restarts = container.get("restartCount", 0)
        if restarts:
            died = (container.get("lastState") or {}).get("terminated") or {}
            how = died.get("reason") or "unknown reason"
            crash = (
                f"{kind} {container['name']} of pod {pod['metadata']['name']} restarted"
                f" {_count(restarts, 'time')} (last: {how}, exit code"
                f" {died.get('exitCode', 'unknown')})"
            )
            last_words = _last_words(died)
            return f"{crash}: {last_words}" if last_words else crash
    return None


def ready_since(pod: dict) -> datetime | None:
    """When this pod last became Ready, if it is Ready and none of its containers ever restarted
    (a pod that crashed once proves nothing by being ready again), else None."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    ready: dict = next((c for c in conditions if c["type"] == "Ready"), {})
    since = ready.get("lastTransitionTime")
    if ready.get("status") != "True" or not since or pod_crash(pod):
        return None
    return datetime.fromisoformat(since)


def _containers(status: dict) -> Iterator[tuple[str, dict]]:
    """(kind in words, status) of the worker containers, then of the init containers."""
    for key, kind in (
        ("containerStatuses", "container"),
        ("initContainerStatuses", "init container"),
    ):
        for container in status.get(key) or []:
            yield kind, container


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _last_words(terminated: dict) -> str:
    """The last lines of a terminated container's message, on one line and bounded."""
    lines = [line.strip() for line in (terminated.get("message") or "").splitlines()]
    quoted = " | ".join([line for line in lines if line][-QUOTED_LINES:])
    return quoted if len(quoted) <= QUOTED_CHARS else "…" + quoted[1 - QUOTED_CHARS :]


def _scheduling_hint(why: str) -> str:
    if "persistentvolumeclaim" in why.lower():
        return "check that the PersistentVolumeClaim of spec.model.source.pvc exists and is bound"
    return "check resources.gpus, nodeSelector and tolerations against the nodes"


def _container_problem(pod: str, kind: str, container: dict) -> PodProblem | None:
    state = container.get("state") or {}
    terminated = state.get("terminated") or {}
    if container.get("ready") or (kind == "init container" and terminated.get("exitCode") == 0):
        return None  # whatever happened before (lastState), it serves now, or its work is done
    name = container["name"]
    waiting = state.get("waiting") or {}
    died = terminated or (container.get("lastState") or {}).get("terminated") or {}
    restarts = container.get("restartCount", 0)
    reason = waiting.get("reason")
    if reason in _IMAGE_PULL:
        return PodProblem(
            pod,
            "ImagePullBackOff",
            f"pod {pod} cannot pull the image of {kind} {name}:"
            f" {waiting.get('message') or reason} (check spec.image and pull secrets)",
        )
    if reason in _CONFIG:
        return PodProblem(
            pod,
            "ConfigError",
            f"{kind} {name} of pod {pod} cannot be created: {waiting.get('message') or reason}"
            " (check the Secrets, ConfigMaps and PersistentVolumeClaim the spec names)",
        )
    if died.get("reason") == "OOMKilled":
        return PodProblem(
            pod,
            "OOMKilled",
            f"{kind} {name} of pod {pod} was OOMKilled ({_count(restarts, 'restart')}): raise"
            " resources.memory, or lower engine.maxNumSeqs or engine.maxModelLen",
        )
    # Between two crashes the container runs again: still failing, or Degraded would flip to
    # Healthy and back (and post two Events) on every restart. A worker is through once its
    # startup probe passes; an init container (no startup probe), once it completes.
    through = container.get("started", True) and kind == "container"
    restarting = restarts > 0 and died and not through
    failed = terminated.get("exitCode", 0) != 0  # and not restarted yet
    if reason == "CrashLoopBackOff" or restarting or failed:
        code = died.get("exitCode", "unknown")
        how = f"keeps failing ({_count(restarts, 'restart')}, " if restarts else "failed ("
        why = _last_words(died) or f"see kubectl logs {pod} -c {name} --previous"
        return PodProblem(
            pod, "CrashLoopBackOff", f"{kind} {name} of pod {pod} {how}exit code {code}): {why}"
        )
    return None
