"""Per-LLMDeployment metrics follow the status and vanish with the object."""

from __future__ import annotations

from pagoda_operator import metrics
from prometheus_client import REGISTRY


def sample(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"namespace": "ns", "name": "m", **labels})


def test_status_is_recorded_and_forgotten():
    status = {
        "readyReplicas": 2,
        "fallbackReadyReplicas": 1,
        "gpus": {"requested": 3},
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Degraded", "status": "False"},
        ],
    }
    metrics.record_status("ns", "m", status)
    assert sample("pagoda_llmdeployment_ready_replicas", tier="primary") == 2
    assert sample("pagoda_llmdeployment_gpus_requested") == 3
    assert sample("pagoda_llmdeployment_condition", type="Ready") == 1
    assert sample("pagoda_llmdeployment_condition", type="Degraded") == 0
    metrics.forget("ns", "m")
    assert sample("pagoda_llmdeployment_ready_replicas", tier="primary") is None
    assert sample("pagoda_llmdeployment_condition", type="Ready") is None
    metrics.forget("ns", "never-seen")  # no error
