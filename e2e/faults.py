"""Pod faults that KWOK fakes, keyed on one pod annotation (stages in e2e/kwok/faults.yaml).

Annotate a running pod (LocalCluster.inject_fault does it), or put the annotation in a pod
template so every pod of a workload gets the fault from its start:

    metadata:
      annotations:
        e2e.pagoda.dev/fault: crash-loop

Removing the annotation makes the pod Ready again (restart counts are kept). To switch a pod
from one fault to another, clear the first and let the pod become Ready; inject_fault does so.
"""

from __future__ import annotations

from enum import StrEnum

FAULT_ANNOTATION = "e2e.pagoda.dev/fault"


class Fault(StrEnum):
    UNREADY = "unready"
    """Containers keep running but fail readiness: Ready and ContainersReady turn False."""

    CRASH_LOOP = "crash-loop"
    """Containers exit with code 1 every few seconds: restartCount grows, state is waiting
    CrashLoopBackOff, lastState.terminated has reason Error."""

    OOM_KILLED = "oom-killed"
    """As CRASH_LOOP, but lastState.terminated is reason OOMKilled with exit code 137."""

    IMAGE_PULL_ERROR = "image-pull-error"
    """Containers wait in ImagePullBackOff, not Ready. A new pod stays Pending; a running pod
    stays Running (as when a restarting container's image has gone)."""
