"""Layer tars are reproducible: the same files give the same digest, whenever they were written."""

from __future__ import annotations

import os
import tarfile

from images.layer import SOURCE_DATE_EPOCH, tar_layer


def make_tree(root):
    (root / "usr/dev").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "usr/bin").mkdir()
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "usr/dev/kept").write_text("a file under a folder named dev")
    (root / "dev/null-ish").write_text("device stand-in")
    long_name = root / "usr/lib" / ("a-long-folder-name/" * 8) / "module.py"  # needs pax headers
    long_name.parent.mkdir(parents=True)
    long_name.write_text("")
    return root


def test_the_same_files_give_the_same_digest_whatever_their_times(tmp_path):
    root = make_tree(tmp_path / "root")
    first = tar_layer(root, tmp_path / "first.tar")
    os.utime(root / "usr/bin/tool", (1_700_000_000, 1_700_000_000))  # a rebuild writes new times
    (root / "usr/dev/kept").read_text()
    second = tar_layer(root, tmp_path / "second.tar")
    assert first.digest == second.digest and first.size == second.size

    (root / "usr/bin/tool").write_text("#!/bin/sh\nexit 1\n")
    assert tar_layer(root, tmp_path / "third.tar").digest != first.digest


def test_members_carry_one_fixed_mtime_and_no_leading_dot(tmp_path):
    layer = tar_layer(make_tree(tmp_path / "root"), tmp_path / "layer.tar")
    with tarfile.open(layer.path) as tar:
        members = tar.getmembers()
    assert {m.mtime for m in members} == {SOURCE_DATE_EPOCH}
    assert [m.name for m in members][:2] == ["dev", "dev/null-ish"]


def test_exclusions_are_anchored_at_the_root(tmp_path):
    layer = tar_layer(make_tree(tmp_path / "root"), tmp_path / "layer.tar", exclude=["dev/*"])
    with tarfile.open(layer.path) as tar:
        names = tar.getnames()
    assert "dev" in names and "dev/null-ish" not in names
    assert "usr/dev/kept" in names


def test_staged_files_are_root_owned_and_readable_by_all(tmp_path):
    root = make_tree(tmp_path / "root")
    (root / "usr/bin/tool").chmod(0o700)
    (root / "usr/dev").chmod(0o700)
    os.chown(root / "usr/bin/tool", 1234, 1234)
    layer = tar_layer(root, tmp_path / "layer.tar", owned_by_root=True)
    with tarfile.open(layer.path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}
    assert members["usr/bin/tool"].mode == 0o755
    assert members["usr/dev"].mode == 0o755
    assert members["usr/dev/kept"].mode == 0o644
