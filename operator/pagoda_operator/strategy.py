"""How a worker Deployment replaces its pods: quota.py decides it, workload.py renders it as the
RollingUpdate strategy, rollout.py quotes it while a rollout runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Strategy:
    max_surge: int
    max_unavailable: int
