"""GPU accounting against the namespace quota, and surge that the quota cannot fit."""

from __future__ import annotations

import pytest
from operator_world import PVC_SOURCE, quota
from pagoda_operator.api.spec import LLMDeploymentSpec
from pagoda_operator.observed import GpuQuota
from pagoda_operator.quota import decide_gpus


def spec(replicas=2, gpus=2, surge=1, unavailable=0, fallback_gpus=None):
    body = {
        "model": {"name": "m", "source": PVC_SOURCE},
        "replicas": replicas,
        "resources": {"gpus": gpus},
        "rollout": {"maxSurge": surge, "maxUnavailable": unavailable},
    }
    if fallback_gpus is not None:
        body["fallback"] = {"model": {"source": PVC_SOURCE}, "resources": {"gpus": fallback_gpus}}
    return LLMDeploymentSpec.model_validate(body)


@pytest.mark.parametrize(
    ("case", "spec", "fallback_replicas", "quota", "ours",
     "requested", "headroom", "strategy", "exceeded", "reason"),
    [
        ("no quota: surge as asked", spec(), 0, None, 0, 6, None, (1, 0), False, "NoQuota"),
        ("plenty of quota", spec(), 0, quota(16, 4), 4, 6, 10, (1, 0), False, "WithinQuota"),
        ("others hold GPUs too", spec(), 0, quota(8, 6), 4, 6, 0, (1, 0), False, "WithinQuota"),
        ("surge does not fit: roll without it", spec(), 0, quota(5, 4), 4, 4, 1, (0, 1), False,
         "WithinQuota"),
        ("surge does not fit, maxUnavailable kept when larger", spec(unavailable=2, surge=1), 0,
         quota(4, 0), 0, 4, 0, (0, 2), False, "WithinQuota"),
        ("warm fallback counts, and so does its surge", spec(fallback_gpus=1), 1, quota(8, 0),
         0, 8, 0, (1, 0), False, "WithinQuota"),
        ("the fallback's surge too does not fit: both roll without surge", spec(fallback_gpus=1),
         1, quota(7, 0), 0, 5, 2, (0, 1), False, "WithinQuota"),
        ("an idle cold fallback adds no surge", spec(fallback_gpus=1), 0, quota(6, 0), 0, 6, 0,
         (1, 0), False, "WithinQuota"),
        ("scaled to zero: no surge", spec(replicas=0), 0, quota(0, 0), 0, 0, 0, (1, 0), False,
         "WithinQuota"),
        ("the pods alone exceed the quota", spec(replicas=3), 0, quota(4, 0), 0, 6, -2, (0, 1),
         True, "GPUQuotaExceeded"),
        ("an idle cold fallback must fit next to the primary at a failover", spec(
            fallback_gpus=2, surge=0, unavailable=1), 0, quota(5, 0), 0, 4, 1, (0, 1), True,
         "FallbackWouldNotFit"),
        ("CPU-only pods never touch the GPU quota", spec(gpus=0), 0, quota(0, 0), 0, 0, 0,
         (1, 0), False, "WithinQuota"),
    ],
)  # fmt: skip
def test_decide_gpus(case, spec, fallback_replicas, quota, ours, requested, headroom, strategy,
                   exceeded, reason):  # fmt: skip
    gpus = decide_gpus(
        spec, fallback_replicas, "team", GpuQuota.tightest([quota] if quota else []), ours
    )
    assert gpus.accounting.requested == requested, case
    assert gpus.accounting.headroom == headroom, case
    assert (gpus.strategy.max_surge, gpus.strategy.max_unavailable) == strategy, case
    assert gpus.verdict.status is exceeded, case
    assert gpus.verdict.reason == reason, case
    assert bool(gpus.surge_note) == (strategy[0] == 0 and spec.rollout.max_surge > 0), case


def test_exceeded_message_has_the_numbers():
    gpus = decide_gpus(spec(replicas=3), 0, "team", GpuQuota.tightest([quota(4, 1)]), ours=0)
    message = gpus.verdict.message
    for fact in ("needs 6 GPUs", "3 primary x 2", "allows 4", "other pods use 1", "leaving 3",
                 "at least 7", "ResourceQuota gpus", "namespace team"):  # fmt: skip
        assert fact in message, (fact, message)


def test_rolling_without_surge_is_said_even_between_rollouts():
    gpus = decide_gpus(spec(), 0, "team", GpuQuota.tightest([quota(5, 4)]), ours=4)
    assert "rolling without surge: a surge of 1 pod would need 2 GPUs but the quota leaves 1" in (
        gpus.verdict.message
    )


def test_tightest_quota_wins_and_others_are_ignored():
    cpu_only = {"metadata": {"name": "cpu"}, "spec": {"hard": {"requests.cpu": "10"}}}
    found = GpuQuota.tightest([cpu_only, quota(10, 2, "big"), quota(4, 1, "small")])
    assert (found.name, found.hard, found.used) == ("small", 4, 1)
    assert GpuQuota.tightest([cpu_only]) is None


def test_quota_quantities_are_parsed_as_kubernetes_writes_them():
    key = "requests.nvidia.com/gpu"
    thousand = {"metadata": {"name": "k"}, "spec": {"hard": {key: "1k"}},
                "status": {"used": {key: "2"}}}  # fmt: skip
    found = GpuQuota.tightest([thousand])
    assert (found.hard, found.used) == (1000, 2)


def test_fallback_would_not_fit_has_the_numbers():
    gpus = decide_gpus(spec(fallback_gpus=2, surge=0, unavailable=1), 0, "team",
                       GpuQuota.tightest([quota(5, 0)]), ours=0)  # fmt: skip
    for fact in ("a failover would start 1 fallback x 2 GPUs", "next to the primary's 4",
                 "6 in all", "allows 5", "at least 6", "fallback.resources.gpus"):  # fmt: skip
        assert fact in gpus.verdict.message, (fact, gpus.verdict.message)


def test_a_scaled_down_primary_counts_what_it_runs():
    gpus = decide_gpus(spec(fallback_gpus=1), 1, "team", None, ours=0, primary_replicas=0)
    assert (gpus.accounting.primary, gpus.accounting.steady) == (0, 1)
