"""pagoda.dev/v1alpha1 LLMDeployment: spec and status models (the one source of truth); the tier
configuration each revision stores is in tier_config.py."""

from .spec import (
    EngineSpec,
    FallbackSpec,
    LLMDeploymentSpec,
    ModelSource,
    ResourcesSpec,
)
from .status import CONDITION_TYPES, Condition, LLMDeploymentStatus

GROUP = "pagoda.dev"
VERSION = "v1alpha1"
KIND = "LLMDeployment"
PLURAL = "llmdeployments"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = [
    "API_VERSION",
    "CONDITION_TYPES",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "Condition",
    "EngineSpec",
    "FallbackSpec",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
    "ModelSource",
    "ResourcesSpec",
]
