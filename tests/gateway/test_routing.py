"""Which backend gets a request: the longest held prefix, consistent hashing with bounded loads,
and round-robin."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from pagoda_gateway.backends import Backend, BackendLoad, BackendPool
from pagoda_gateway.prefix_index import BLOCK_CHARS, block_hashes
from pagoda_gateway.routing import BALANCE, HashRing, Router

PODS = [Backend(f"pod-{i}", f"http://10.0.0.{i}:8000") for i in range(4)]
KEYS = [f"chat:system:you are assistant number {i}" for i in range(1000)]


def loads(by_name: dict[str, float]):
    return lambda backend: by_name.get(backend.name, 0.0)


idle = loads({})


def owners(router: Router, backends: list[Backend]) -> dict[str, str]:
    return {key: router.choose(backends, key, idle).name for key in KEYS}


def test_a_key_always_goes_to_the_same_backend_on_every_replica():
    # Two gateway replicas (two routers), backends listed in any order, agree on every key.
    first = owners(Router(), PODS)
    assert owners(Router(), list(reversed(PODS))) == first
    assert owners(Router(), PODS) == first


def test_keys_spread_over_the_backends():
    shares = Counter(owners(Router(), PODS).values())
    assert set(shares) == {pod.name for pod in PODS}
    for pod, count in shares.items():
        assert 150 <= count <= 350, (pod, shares)


def test_removing_a_backend_moves_only_its_own_keys():
    router = Router()
    before = owners(router, PODS)
    after = owners(router, [pod for pod in PODS if pod.name != "pod-2"])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "pod-2"}
    assert owners(router, PODS) == before  # and they come back when it does


def test_the_ring_walks_every_backend_once_from_the_keys_owner():
    ring = HashRing(PODS)
    for key in KEYS[:50]:
        walk = [backend.name for backend in ring.walk(key)]
        assert sorted(walk) == [pod.name for pod in PODS]
        assert walk[0] == Router().choose(PODS, key, idle).name


def test_a_key_stays_while_its_backend_is_within_the_bound():
    # Two backends, the other one carrying 4: the owner keeps the key while its load after
    # this request is at most ceil(1.25 * (all loads + 1) / 2).
    key = KEYS[0]
    owner, other = (backend.name for backend in HashRing(PODS[:2]).walk(key))
    for owner_load in range(20):
        load = {owner: float(owner_load), other: 4.0}
        cap = math.ceil(BALANCE * (owner_load + 4 + 1) / 2)
        chosen = Router().choose(PODS[:2], key, loads(load)).name
        assert chosen == (owner if owner_load + 1 <= cap else other), owner_load
    # the bound's edge, by hand: 8 + 1 <= ceil(1.25 * 13 / 2) = 9, but 9 + 1 > ceil(8.75) = 9
    assert Router().choose(PODS[:2], key, loads({owner: 8, other: 4})).name == owner
    assert Router().choose(PODS[:2], key, loads({owner: 9, other: 4})).name == other


def test_a_hot_key_moves_on_along_the_ring_past_every_overloaded_backend():
    key = KEYS[1]
    walk = [backend.name for backend in HashRing(PODS).walk(key)]
    busy = {walk[0]: 3.0, walk[1]: 3.0}  # cap: ceil(1.25 * 7 / 4) = 3; each of them would be 4
    assert Router().choose(PODS, key, loads(busy)).name == walk[2]
    busy[walk[0]] = 1.0  # its owner calmed down: the key goes home
    assert Router().choose(PODS, key, loads(busy)).name == walk[0]


def test_without_a_key_the_least_loaded_backend_wins_ties_by_name():
    router = Router()
    busy = {"pod-0": 2, "pod-1": 1, "pod-2": 0.5, "pod-3": 3}
    assert router.choose(PODS, None, loads(busy)).name == "pod-2"
    assert router.choose(PODS, None, loads({"pod-0": 1})).name == "pod-1"


def test_round_robin_cycles_in_name_order_ignoring_keys_and_loads():
    router = Router("round-robin")
    shuffled = [PODS[2], PODS[0], PODS[3], PODS[1]]
    chosen = [router.choose(shuffled, "same key", loads({"pod-0": 100})).name for _ in range(8)]
    assert chosen == ["pod-0", "pod-1", "pod-2", "pod-3"] * 2


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown routing policy 'random'"):
        Router("random")


def test_choosing_from_no_backend_is_an_error():
    with pytest.raises(ValueError, match="no backend"):
        Router().choose([], "key", idle)


def test_between_equally_busy_backends_the_emptier_kv_cache_wins():
    pool = BackendPool()
    first, second = Backend("b-1", "http://127.0.0.1:1"), Backend("b-2", "http://127.0.0.1:2")
    pool.set_ready("active", [first, second])
    pool.loads = {"b-1": BackendLoad(kv_usage=0.8), "b-2": BackendLoad(kv_usage=0.1)}
    assert Router().choose([first, second], None, pool.load) == second
    pool.loads["b-2"] = BackendLoad(waiting=1, kv_usage=0.1)  # a queue outweighs a fuller cache
    assert Router().choose([first, second], None, pool.load) == first


def held_prefix(text_blocks: int, tail: str = "") -> tuple[int, ...]:
    return block_hashes("s" * BLOCK_CHARS * text_blocks + tail)


def test_a_prompt_goes_where_the_longest_part_of_it_is_held():
    router = Router()
    system, conversation = held_prefix(4), held_prefix(4, "u" * 3 * BLOCK_CHARS)
    key = "prompt:sss"
    ring_pick = router.choose(PODS, key, idle)
    others = [p for p in PODS if p != ring_pick]
    router.served(system, others[0])
    router.served(conversation[:6], others[1])
    # the next turn of that conversation: held longest by others[1], whatever the ring says
    assert router.choose(PODS, key, idle, conversation) == others[1]
    # a new conversation on the same system prompt: where the system prompt is held longest
    assert router.choose(PODS, key, idle, held_prefix(4, "v" * 2 * BLOCK_CHARS)) in others[:2]
    # nobody holds it: its ring place
    assert router.choose(PODS, key, idle, held_prefix(0, "w" * 4 * BLOCK_CHARS)) == ring_pick


def test_a_holder_over_the_load_bound_gives_way_to_the_next_longest_then_the_ring():
    router = Router()
    conversation = held_prefix(2, "u" * 2 * BLOCK_CHARS)
    router.served(conversation, PODS[0])
    router.served(conversation[:2], PODS[1])
    busy = {"pod-0": 9.0}  # cap = ceil(1.25 * 10 / 4) = 4
    assert router.choose(PODS, "k", loads(busy), conversation) == PODS[1]
    busy |= {"pod-1": 9.0}  # cap = ceil(1.25 * 19 / 4) = 6: neither holder takes it
    chosen = router.choose(PODS, "k", loads(busy), conversation)
    assert chosen in PODS[2:]


def test_round_robin_keeps_no_index():
    router = Router("round-robin")
    router.served(held_prefix(2), PODS[0])
    assert len(router.index) == 0
