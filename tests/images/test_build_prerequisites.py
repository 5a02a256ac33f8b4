"""A missing prerequisite of the base layer stops the build with one message that names the fix."""

from __future__ import annotations

import os
import socket

import pytest

from images import debian
from images.__main__ import main
from images.process import BuildError


def test_not_root_says_to_use_sudo(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["worker", "--cache", str(tmp_path / "cache")]) == 1
    assert "error: building the base layer needs root" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_no_debootstrap_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no tools at all
    with pytest.raises(BuildError, match="debootstrap is missing: apt-get install debootstrap"):
        debian.check_host()


def test_an_unreachable_mirror_says_the_base_layer_needs_it():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens on it once the socket is closed
    source = debian.AptSource(f"http://127.0.0.1:{port}/debian/", "bookworm")
    with pytest.raises(BuildError, match=r"cannot reach the Debian mirror at http://127\.0\.0\.1"):
        debian.check_reachable(source)


def test_a_suite_apt_has_no_source_for_is_refused():
    with pytest.raises(BuildError, match="Debian trixie-backports-sloppy"):
        debian.apt_sources("trixie-backports-sloppy")
