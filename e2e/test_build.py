"""The version pins and the generated wrapper modules (no cluster needed)."""

from __future__ import annotations

import pytest

from e2e import build
from e2e.build import Versions, kubernetes_wrapper, load_versions

VERSIONS = Versions(kubernetes="v1.37.2", etcd="v3.6.16", kwok="v0.8.0")
# The shape of `go mod edit -json` on a k8s.io/kubernetes release's go.mod, cut down.
RELEASE = {
    "Go": "1.26.0",
    "Godebug": [{"Key": "default", "Value": "go1.26"}],
    "Require": [
        {"Path": "k8s.io/api", "Version": "v0.0.0"},
        {"Path": "k8s.io/client-go", "Version": "v0.0.0"},
        {"Path": "github.com/spf13/cobra", "Version": "v1.10.2"},
    ],
    "Replace": [
        {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "./staging/src/k8s.io/api"}},
        {"Old": {"Path": "k8s.io/client-go"}, "New": {"Path": "./staging/src/k8s.io/client-go"}},
        # Replaced but not required by the release: stays out of the wrapper.
        {
            "Old": {"Path": "k8s.io/sample-cli-plugin"},
            "New": {"Path": "./staging/src/k8s.io/sample-cli-plugin"},
        },
    ],
}


def test_pinned_versions_load() -> None:
    versions = load_versions()
    assert versions.kubernetes.startswith("v1.")
    assert versions.etcd.startswith("v3.6.")
    assert versions.staging == "v0." + versions.kubernetes.removeprefix("v1.")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("KUBERNETES_VERSION=v1.37.2\nETCD_VERSION=v3.6.16\n", "missing KWOK_VERSION"),
        ("KUBERNETES_VERSION=1.37\nETCD_VERSION=v3.6.16\nKWOK_VERSION=v0.8.0\n", "vX.Y.Z"),
        ("KUBERNETES_VERSION v1.37.2\n", "expected KEY=VALUE"),
    ],
)
def test_bad_versions_file_is_refused_with_the_reason(tmp_path, text: str, error: str) -> None:
    path = tmp_path / "versions.env"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_versions(path)


def test_wrapper_replaces_each_required_staging_module_with_its_published_version() -> None:
    gomod = kubernetes_wrapper(VERSIONS, RELEASE)

    assert "require k8s.io/kubernetes v1.37.2\n" in gomod
    assert "\tk8s.io/api => k8s.io/api v0.37.2\n" in gomod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.37.2\n" in gomod
    assert "sample-cli-plugin" not in gomod
    assert "=> ./staging" not in gomod
    assert "go 1.26.0\n" in gomod and "godebug default=go1.26\n" in gomod
    for command in build.KUBE_COMMANDS:
        assert f"\tk8s.io/kubernetes/cmd/{command}\n" in gomod


def test_committed_wrapper_matches_versions_env() -> None:
    versions = load_versions()
    release = build.module_gomod("k8s.io/kubernetes", versions.kubernetes)
    assert build.wrapper_matches(
        build.GOMOD_DIR / "kubernetes",
        kubernetes_wrapper(versions, release),
        {"k8s.io/kubernetes": versions.kubernetes},
    ), "e2e/gomod/kubernetes is stale: run `python -m e2e.build` and commit it"
