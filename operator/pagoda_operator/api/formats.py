"""Kubernetes string formats the children validate, checked on the LLMDeployment itself: the same
regular expression becomes the CRD's pattern (or CEL rule) and the pydantic check, so a spec the
apiserver accepts never fails later on a Deployment or pod."""

from __future__ import annotations

import re
from typing import Annotated

from kubernetes.utils import parse_quantity
from pydantic import AfterValidator, Field

# Resource quantities as Kubernetes writes them: 500m, 2, 1.5, 16Gi, 1e3 (no sign: requests).
QUANTITY = r"^\+?([0-9]+\.?[0-9]*|\.[0-9]+)([KMGTPE]i|[mkMGTPE]|[eE][-+]?[0-9]+)?$"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
# Label and annotation keys: an optional DNS-subdomain prefix and '/', then a name of 63 or less.
QUALIFIED_NAME = rf"^({_DNS_SUBDOMAIN}/)?{_NAME}$"
LABEL_VALUE = rf"^({_NAME})?$"
# Names of namespaced objects (Secrets, ConfigMaps, claims), and the keys of their data.
DNS_SUBDOMAIN = rf"^{_DNS_SUBDOMAIN}$"
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
# Environment variable names that every shell and runtime takes: C identifiers.
C_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
# An image reference: [registry[:port]/]path[:tag][@digest], as the container runtime parses it.
_HOST = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
_REGISTRY = rf"({_HOST}(\.{_HOST})*(:[0-9]+)?/)?"
_COMPONENT = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
_TAG = r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
_DIGEST = r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
IMAGE = rf"^{_REGISTRY}{_COMPONENT}(/{_COMPONENT})*{_TAG}{_DIGEST}$"

QUANTITY_MESSAGE = "must be a Kubernetes quantity such as 500m, 2, 1.5 or 16Gi"
KEY_MESSAGE = (
    "must be a valid label/annotation key: an optional DNS subdomain and '/', then 1-63"
    " letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)


def _quantity(value: str) -> str:
    try:
        parse_quantity(value)  # the Kubernetes client's own parser, as the operator reads them
    except ValueError as error:
        raise ValueError(f"{value!r} {QUANTITY_MESSAGE}") from error
    return value


def _keys(mapping: dict[str, str]) -> dict[str, str]:
    for key in mapping:
        if not re.fullmatch(QUALIFIED_NAME, key):
            raise ValueError(f"key {key!r} {KEY_MESSAGE}")
    return mapping


def _cel_keys() -> dict:
    rule = f"self.all(k, k.matches(r'{QUALIFIED_NAME}'))"  # a raw CEL string: no escapes
    return {"x-kubernetes-validations": [{"rule": rule, "message": f"every key {KEY_MESSAGE}"}]}


# The pattern catches typos; CEL's isQuantity is the apiserver's own parser.
_IS_QUANTITY = {"rule": "isQuantity(self)", "message": QUANTITY_MESSAGE}
Quantity = Annotated[
    str,
    Field(
        max_length=32,
        pattern=QUANTITY,
        json_schema_extra={"x-kubernetes-validations": [_IS_QUANTITY]},
    ),
    AfterValidator(_quantity),
]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
Image = Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE)]
LabelMap = Annotated[
    dict[str, LabelValue],
    Field(max_length=32, json_schema_extra=_cel_keys()),
    AfterValidator(_keys),
]
AnnotationMap = Annotated[
    dict[str, Annotated[str, Field(max_length=4096)]],
    Field(max_length=64, json_schema_extra=_cel_keys()),
    AfterValidator(_keys),
]
