"""Which replica works: the same rule kopf's peering applies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from operator_world import T0
from pagoda_operator.peering import PeeringGate, outranked


def peer(priority: int, seconds_ago: float = 1, lifetime: int = 30) -> dict:
    seen = (T0 - timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


@pytest.mark.parametrize(
    ("case", "peers", "outranked_"),
    [
        ("alone", {"me": peer(10)}, False),
        ("a lower peer", {"me": peer(10), "b": peer(5)}, False),
        ("a higher peer", {"me": peer(10), "b": peer(20)}, True),
        ("an equal peer: kopf pauses both", {"me": peer(10), "b": peer(10)}, True),
        ("a higher peer that went silent", {"b": peer(20, seconds_ago=31)}, False),
        ("a higher peer that left (lifetime 0)", {"b": peer(20, lifetime=0)}, False),
        ("a removed entry", {"b": None}, False),
    ],
)
def test_outranked(case, peers, outranked_):
    assert outranked(peers, "me", 10, T0) is outranked_, case


def test_standalone_is_always_active():
    assert PeeringGate(None, "me", 1).active()


def test_gate_reads_every_peering_object_and_caches():
    reads = []

    def read():
        reads.append(1)
        return [
            {},
            {"b": {"priority": 99, "lifetime": 60, "lastseen": "2999-01-01T00:00:00+00:00"}},
        ]

    gate = PeeringGate(read, "me", 1, ttl=60)
    assert gate.active() is False
    assert gate.active() is False
    assert len(reads) == 1
