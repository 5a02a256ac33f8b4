"""Cache entries appear whole or not at all: an interrupted build never looks cached."""

from __future__ import annotations

import pytest

from images.cache import cached, holding, keep_only


def test_a_failed_build_leaves_no_entry_and_the_next_one_builds_it(tmp_path):
    entry = tmp_path / "base" / "key"

    def interrupted(folder):
        (folder / "half.tar").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached(entry, interrupted)
    assert not entry.exists() and list(entry.parent.iterdir()) == []

    cached(entry, lambda folder: (folder / "whole.tar").write_text("whole"))
    assert [p.name for p in entry.iterdir()] == ["whole.tar"]
    cached(entry, lambda folder: pytest.fail("a cached entry is not built again"))


def test_holding_the_cache_sweeps_what_a_killed_build_left(tmp_path):
    killed = tmp_path / "base" / ".partial-key"  # a build killed before it could clean up
    killed.mkdir(parents=True)
    with holding(tmp_path):
        assert not killed.exists()
        cached(killed.with_name("key"), lambda folder: None)


def test_keep_only_drops_the_other_entries_of_a_kind(tmp_path):
    for key in ("old", "new"):
        cached(tmp_path / "archives" / key, lambda folder: None)
    keep_only(tmp_path / "archives" / "new")
    assert [p.name for p in (tmp_path / "archives").iterdir()] == ["new"]
