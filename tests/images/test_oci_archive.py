"""The OCI archive: an image-layout tar whose every blob is named by its sha256 and whose index
names the image the way containerd, podman and skopeo read it."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from images.layer import tar_layer
from images.oci import Image, write_archive

REFERENCE = "registry.k8s.io/pause:3.10"
CONFIG = {"Cmd": ["/pause"], "User": "65535:65535"}


@pytest.fixture
def image(tmp_path) -> Image:
    root = tmp_path / "root"
    root.mkdir()
    (root / "pause").write_bytes(b"\x7fELF not really")
    return Image([tar_layer(root, tmp_path / "layer.tar")], CONFIG, REFERENCE)


def read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def test_every_blob_is_named_by_its_sha256_and_the_index_leads_to_them(image, tmp_path):
    written = write_archive(tmp_path / "pause.tar", image)
    files = read_archive(written.path)

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    blobs = {name.removeprefix("blobs/sha256/"): data for name, data in files.items()
             if name.startswith("blobs/")}  # fmt: skip
    assert all(hashlib.sha256(data).hexdigest() == name for name, data in blobs.items())

    [entry] = json.loads(files["index.json"])["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert entry["annotations"] == {
        "io.containerd.image.name": REFERENCE,  # containerd's name for the image
        "org.opencontainers.image.ref.name": "3.10",  # the OCI tag, as containerd exports it
    }
    manifest_bytes = blobs[entry["digest"].removeprefix("sha256:")]
    assert entry["size"] == len(manifest_bytes) and written.digest == entry["digest"]

    manifest = json.loads(manifest_bytes)
    config_bytes = blobs[manifest["config"]["digest"].removeprefix("sha256:")]
    assert manifest["config"]["size"] == len(config_bytes)
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    layer_bytes = blobs[layer["digest"].removeprefix("sha256:")]
    assert layer_bytes == image.layers[0].path.read_bytes() and layer["size"] == len(layer_bytes)

    config = json.loads(config_bytes)
    assert config["config"] == CONFIG and (config["os"], config["architecture"]) == (
        "linux",
        "amd64",
    )
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    assert written.size_bytes == len(layer_bytes) and written.reference == REFERENCE


def test_the_same_image_gives_the_same_archive(image, tmp_path):
    first = write_archive(tmp_path / "first.tar", image)
    second = write_archive(tmp_path / "second.tar", image)
    assert first.path.read_bytes() == second.path.read_bytes()


@pytest.mark.parametrize("reference", ["pause:3.10", "registry.k8s.io/pause", "Pause"])
def test_a_reference_without_registry_or_tag_is_refused_with_the_form_it_needs(image, reference):
    with pytest.raises(ValueError, match=r"full name with a tag, such as docker\.io/library/"):
        Image(image.layers, CONFIG, reference)
