"""`python -m e2e.node [pytest args]` always runs the tier's own tests."""

from __future__ import annotations

import pytest

from e2e.node.__main__ import pytest_args


@pytest.mark.parametrize(
    ("given", "runs"),
    [
        ([], ["e2e/node", "-q"]),
        (["-x", "-k", "rolling"], ["e2e/node", "-x", "-k", "rolling"]),
        (["e2e/node/test_serving.py", "-x"], ["e2e/node/test_serving.py", "-x"]),
    ],
)
def test_the_tiers_tests_run_unless_some_are_named(given: list[str], runs: list[str]) -> None:
    assert pytest_args(given) == runs
