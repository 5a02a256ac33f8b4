"""spec.env: environment variables of the worker pods, as the core Pod API writes them (a value,
or a Secret or ConfigMap key), less the names the operator sets itself."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .base import ApiModel, cel, first_repeated, validations
from .formats import C_IDENTIFIER, DATA_KEY, DNS_SUBDOMAIN

# Set by the operator on the worker or the fetch-model container (workload.py).
OPERATOR_ENV = ("HOME", "HF_HOME", "HF_TOKEN", "MODEL_URI", "MODEL_SHA256", "TARGET")
RESERVED_MESSAGE = (
    f"spec.env cannot set {', '.join(OPERATOR_ENV)}: the operator sets them (a Hugging Face"
    " token comes from spec.model.source.hf.tokenSecret)"
)
ONE_VALUE_MESSAGE = "an env entry must set exactly one of value or valueFrom"
ONE_SOURCE_MESSAGE = "env valueFrom must set exactly one of secretKeyRef or configMapKeyRef"


class KeyRef(ApiModel):
    """One key of a Secret or ConfigMap in the LLMDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Secret or ConfigMap."""
    key: str = Field(min_length=1, max_length=253, pattern=DATA_KEY)
    """Key whose value the variable takes."""


class EnvSource(ApiModel):
    """Where a variable's value comes from: exactly one of secretKeyRef or configMapKeyRef."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.secretKeyRef) != has(self.configMapKeyRef)", ONE_SOURCE_MESSAGE)
        )
    )

    secret_key_ref: KeyRef | None = None
    """A key of a Secret (for tokens and passwords)."""
    config_map_key_ref: KeyRef | None = None
    """A key of a ConfigMap."""

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError(ONE_SOURCE_MESSAGE)
        return self


class EnvVar(ApiModel):
    """One environment variable: a name and either a value or where to read it from."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(f"!(self.name in {list(OPERATOR_ENV)})", RESERVED_MESSAGE, ".name"),
            cel("has(self.value) != has(self.valueFrom)", ONE_VALUE_MESSAGE),
        )
    )

    name: str = Field(min_length=1, max_length=128, pattern=C_IDENTIFIER)
    """Variable name: letters, digits and '_', not starting with a digit."""
    value: str | None = Field(None, max_length=4096)
    """The value itself (may be empty)."""
    value_from: EnvSource | None = None
    """Read the value from a Secret or ConfigMap key when the pod starts."""

    @model_validator(mode="after")
    def _valid(self) -> EnvVar:
        if self.name in OPERATOR_ENV:
            raise ValueError(RESERVED_MESSAGE)
        if (self.value is None) == (self.value_from is None):
            raise ValueError(ONE_VALUE_MESSAGE)
        return self

    def container_env(self) -> dict:
        """As a container's env entry."""
        return self.model_dump(by_alias=True, exclude_none=True)


def _unique_names(env: list[EnvVar]) -> list[EnvVar]:
    if (twice := first_repeated(v.name for v in env)) is not None:
        raise ValueError(f"spec.env sets {twice} twice: keep one entry per name")
    return env


# A list map keyed by name: the apiserver refuses a repeated name, and server-side apply merges
# entries by name.
Env = Annotated[
    list[EnvVar],
    Field(
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ),
    AfterValidator(_unique_names),
]
