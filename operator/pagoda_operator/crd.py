"""The LLMDeployment CustomResourceDefinition, generated from the pydantic models.

`python -m pagoda_operator.crd` rewrites crds/llmdeployments.pagoda.dev.yaml;
`--check` exits 1 when the committed file differs from what the models generate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .api import GROUP, KIND, PLURAL, VERSION, LLMDeploymentSpec, LLMDeploymentStatus
from .api.base import cel
from .api.openapi import structural_schema

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / f"{PLURAL}.{GROUP}.yaml"
HEADER = "# Generated from operator/pagoda_operator/api by `python -m pagoda_operator.crd`.\n"

# Child names append "-fallback" and a hash; the Service takes the name itself (DNS-1035).
NAME_RULE = cel(
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 50",
    "metadata.name must be a DNS-1035 label of at most 50 characters (lowercase letters, digits"
    " and '-', starting with a letter): it names the Service and the worker Deployments",
)

PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the endpoint serves",
    },
    {
        "name": "Up-To-Date",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="UpToDate")].status',
        "description": "Whether the spec's revision is what runs",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Tier", "type": "string", "jsonPath": ".status.activeTier"},
    {
        "name": "Model",
        "type": "string",
        "jsonPath": ".status.model",
        "description": "Model served by the last revision that became ready",
    },
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas", "priority": 1},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus.steady"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _status_schema() -> dict[str, Any]:
    schema = structural_schema(LLMDeploymentStatus)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def build_crd() -> dict[str, Any]:
    root = {
        "type": "object",
        "description": "LLMDeployment serves a language model over an OpenAI-compatible API on"
        " worker pods, with rollout, rollback, health, fallback and GPU quota handled by the"
        " Pagoda operator.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(LLMDeploymentSpec),
            "status": _status_schema(),
        },
        "x-kubernetes-validations": [NAME_RULE],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["llmd"],
                "categories": ["pagoda"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # repeated sub-schemas are written out, not as YAML anchors


def render_crd() -> str:
    return HEADER + yaml.dump(build_crd(), Dumper=_Dumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pagoda_operator.crd", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed CRD is stale")
    args = parser.parse_args(argv)
    text = render_crd()
    if args.check:
        if not CRD_PATH.exists() or CRD_PATH.read_text() != text:
            print(f"{CRD_PATH} is stale: run python -m pagoda_operator.crd", file=sys.stderr)
            return 1
        return 0
    CRD_PATH.write_text(text)
    print(f"wrote {CRD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
