"""Container images built with no registry and no Docker engine.

A Debian root filesystem (debootstrap), the worker's pinned wheels and the project's own wheel,
written as layer tars and packed into an OCI archive that containerd, podman and skopeo load.
See images/README.md; `python -m images worker` builds the worker image.
"""
