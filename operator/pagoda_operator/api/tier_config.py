"""A tier's pod configuration as one value, and its content hash (the revision). Stored as JSON
in each revision's ConfigMap, so a change to these fields changes every revision's hash."""

from __future__ import annotations

import hashlib
import json

from pydantic import Field

from .base import ApiModel
from .env import EnvVar
from .spec import EngineSpec, ModelSource, ResourcesSpec, ServingSpec
from .status import Tier


class TierConfig(ApiModel):
    """Everything that shapes a tier's pods. Stored in the revision's ConfigMap, so a rollback
    can render an earlier revision after the spec has moved on."""

    tier: Tier
    served_name: str
    source: ModelSource
    engine: EngineSpec
    image: str
    image_pull_policy: str
    resources: ResourcesSpec
    serving: ServingSpec
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    # Left out of dumps while empty, so the revision hash of a spec without env stays the same.
    env: list[EnvVar] = Field(default_factory=list, exclude_if=lambda env: not env)

    @property
    def revision(self) -> str:
        fields = self.model_dump(mode="json", by_alias=True)
        if self.engine.tensor_parallel_size > 1:
            # Workers were not told tensorParallelSize until they could split a model: a spec
            # that set it renders other pods now (and its revision's ConfigMaps are immutable),
            # so it gets a new revision.
            fields["splitsModel"] = True
        canonical = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]
