"""Ownership between objects wanting one library on one Redis: the oldest manages it, the others wait and take over
— also across shards (several instances, each reconciling what its label selector matches, reading the rest)."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from redis_functions_operator.k8s.controller import Controller, published_claim
from redis_functions_operator.k8s.handlers import library_elsewhere_event
from redis_functions_operator.k8s.kube import Kube, LabelSelector, SelectorError
from redis_functions_operator.k8s.ownership import Key, Ownership

ELDER: Key = ("apps", "elder")
YOUNGER: Key = ("apps", "younger")
TARGET_A = (("127.0.0.1:6379",), "auto", None)
TARGET_B = (("localhost:6379",), "auto", None)


class World:
    def __init__(self) -> None:
        self.created: dict[Key, str] = {ELDER: "2026-01-01T00:00:00Z", YOUNGER: "2026-01-02T00:00:00Z"}
        self.woken: list[Key] = []
        self.ownership = Ownership(self.created.get, self.woken.append)


def test_same_target_as_written_conflicts_before_any_discovery() -> None:
    world = World()
    world.ownership.claim_as_written(YOUNGER, TARGET_A, "lib")
    world.ownership.claim_as_written(ELDER, TARGET_A, "lib")
    assert world.ownership.blocker(YOUNGER) == ELDER
    assert world.ownership.blocker(ELDER) is None
    assert world.woken == [YOUNGER]  # it may have acted alone until now: it must re-check


def test_two_spellings_of_one_server_conflict_once_discovered() -> None:
    world = World()
    world.ownership.claim_as_written(ELDER, TARGET_A, "lib")
    world.ownership.claim_as_written(YOUNGER, TARGET_B, "lib")
    assert world.ownership.blocker(YOUNGER) is None  # as written they differ
    world.ownership.claim_servers(ELDER, "lib", ["run-1"])
    world.ownership.claim_servers(YOUNGER, "lib", ["run-1"])
    assert world.ownership.blocker(YOUNGER) == ELDER
    assert world.ownership.rivals(ELDER) == [YOUNGER]


def test_overlap_of_one_primary_is_enough_and_other_libraries_are_free() -> None:
    world = World()
    world.ownership.claim_servers(ELDER, "lib", ["node-1", "node-2", "node-3"])
    world.ownership.claim_servers(YOUNGER, "other", ["node-3"])
    assert world.ownership.blocker(YOUNGER) is None
    world.ownership.claim_servers(YOUNGER, "lib", ["node-3", "node-4"])
    assert world.ownership.blocker(YOUNGER) == ELDER


def test_the_younger_takes_over_when_the_elder_goes() -> None:
    world = World()
    world.ownership.claim_servers(ELDER, "lib", ["run-1"])
    world.ownership.claim_servers(YOUNGER, "lib", ["run-1"])
    world.woken.clear()
    del world.created[ELDER]
    world.ownership.release(ELDER)
    assert world.woken == [YOUNGER]
    assert world.ownership.blocker(YOUNGER) is None


def test_a_restarted_server_moves_the_claims_and_wakes_the_others() -> None:
    world = World()
    world.ownership.claim_servers(ELDER, "lib", ["run-1"])
    world.ownership.claim_servers(YOUNGER, "lib", ["run-1"])
    world.woken.clear()
    world.ownership.claim_servers(ELDER, "lib", ["run-2"])  # the elder saw the restart first
    assert world.woken == [YOUNGER]
    assert world.ownership.blocker(YOUNGER) is None  # until it rediscovers, too
    world.ownership.claim_servers(YOUNGER, "lib", ["run-2"])
    assert world.ownership.blocker(YOUNGER) == ELDER


def test_unchanged_claims_wake_nobody() -> None:
    world = World()
    world.ownership.claim_servers(ELDER, "lib", ["run-1"])
    world.ownership.claim_servers(YOUNGER, "lib", ["run-1"])
    world.woken.clear()
    world.ownership.claim_servers(ELDER, "lib", ["run-1"])
    world.ownership.claim_as_written(ELDER, TARGET_A, "lib")
    world.ownership.claim_as_written(ELDER, TARGET_A, "lib")
    assert world.woken == []


def test_a_younger_object_waits_until_an_elder_of_the_same_library_was_looked_up() -> None:
    world = World()
    world.ownership.claim_as_written(ELDER, TARGET_A, "lib")  # both queued at once, as after a restart
    world.ownership.claim_as_written(YOUNGER, TARGET_B, "lib")
    world.ownership.claim_servers(YOUNGER, "lib", ["run-1"])
    assert world.ownership.blocker(YOUNGER) is None
    assert world.ownership.undiscovered_elder(YOUNGER) == ELDER  # so it must not load yet
    assert world.ownership.undiscovered_elder(ELDER) is None
    world.ownership.claim_servers(ELDER, "lib", ["run-1"])
    assert world.ownership.undiscovered_elder(YOUNGER) is None
    assert world.ownership.blocker(YOUNGER) == ELDER


def test_an_elder_that_could_not_be_looked_up_does_not_hold_anyone_back() -> None:
    world = World()
    world.ownership.claim_as_written(ELDER, TARGET_A, "lib")
    world.ownership.claim_as_written(YOUNGER, TARGET_B, "lib")
    world.ownership.claim_servers(ELDER, "lib", [])  # its Redis is down
    world.ownership.claim_servers(YOUNGER, "lib", ["run-1"])
    assert world.ownership.undiscovered_elder(YOUNGER) is None
    assert world.ownership.blocker(YOUNGER) is None


def test_other_library_names_never_wait() -> None:
    world = World()
    world.ownership.claim_as_written(ELDER, TARGET_A, "lib")
    world.ownership.claim_as_written(YOUNGER, TARGET_A, "other")
    assert world.ownership.undiscovered_elder(YOUNGER) is None


# --- across shards (--label-selector): another instance's objects lend their claims, are never acted on ----------

SHARD_KEY = "sharding.fluxcd.io/key"


def test_a_published_elder_blocks_and_never_waits_for_a_lookup() -> None:
    world = World()
    world.ownership.claim_published(ELDER, TARGET_A, "lib", [])  # another shard's object, no status yet
    world.ownership.claim_as_written(YOUNGER, TARGET_A, "lib")
    world.ownership.claim_servers(YOUNGER, "lib", ["run-1"])
    assert world.ownership.undiscovered_elder(YOUNGER) is None  # nobody here will look its servers up
    assert world.ownership.blocker(YOUNGER) == ELDER


def test_published_cluster_node_ids_join_two_spellings_across_shards() -> None:
    world = World()
    world.ownership.claim_published(ELDER, TARGET_A, "lib", ["node-1", "node-2"])
    world.ownership.claim_as_written(YOUNGER, TARGET_B, "lib")
    world.ownership.claim_servers(YOUNGER, "lib", ["node-2", "node-3"])
    assert world.ownership.blocker(YOUNGER) == ELDER


def test_a_published_object_without_a_known_library_claims_nothing() -> None:
    world = World()
    world.ownership.claim_published(ELDER, TARGET_A, "lib", [])
    world.ownership.claim_as_written(YOUNGER, TARGET_A, "lib")
    world.woken.clear()
    world.ownership.claim_published(ELDER, TARGET_A, None, [])  # its spec no longer names one
    assert world.ownership.blocker(YOUNGER) is None
    assert world.woken == [YOUNGER]


def body(name: str, created: str, shard: str | None = None, **status: object) -> dict[str, object]:
    metadata: dict[str, object] = {"namespace": "apps", "name": name, "creationTimestamp": created, "generation": 1}
    if shard:
        metadata["labels"] = {SHARD_KEY: shard}
    code = "#!lua name=lib\nredis.register_function('f', function() return 1 end)\n"
    spec = {"code": code, "target": {"endpoints": ["127.0.0.1:6379"]}}
    return {"metadata": metadata, "spec": spec, "status": status}


def controller() -> Controller:
    return Controller(Kube(k8s.ApiClient()))


async def test_the_controller_queues_only_its_own_shard_and_reads_the_others() -> None:
    shard = LabelSelector.parse(f"{SHARD_KEY}=one")
    mine, theirs = body("younger", "2026-01-02T00:00:00Z", "one"), body("elder", "2026-01-01T00:00:00Z")
    control = controller()
    control.observe(mine)  # kopf's filtered watch delivers only this one
    library_elsewhere_event(control, shard, "ADDED", theirs)  # the unfiltered watch, both
    library_elsewhere_event(control, shard, "ADDED", mine)
    assert len(control.queue) == 1  # the other shard's object is never queued, not even when woken
    assert control.ownership.blocker(YOUNGER) == ELDER
    assert control.health()["libraries"] == 1
    library_elsewhere_event(control, shard, "DELETED", theirs)
    assert control.ownership.blocker(YOUNGER) is None


async def test_a_relabelled_object_moves_its_claims_from_one_instance_to_the_other() -> None:
    shard = LabelSelector.parse(f"{SHARD_KEY}=one")
    elder = body("elder", "2026-01-01T00:00:00Z", "one")
    control = controller()
    control.observe(body("younger", "2026-01-02T00:00:00Z", "one"))
    control.observe(elder)
    moved = body("elder", "2026-01-01T00:00:00Z", "two")
    library_elsewhere_event(control, shard, "MODIFIED", moved)  # the unfiltered watch may tell first...
    assert control.ownership.blocker(YOUNGER) == ELDER
    control.forget(elder)  # ...then kopf's filtered watch: DELETED, as the API server says when it leaves a selector
    assert control.ownership.blocker(YOUNGER) == ELDER  # still the elder: it only changed hands
    assert control.health()["libraries"] == 1
    library_elsewhere_event(control, shard, "MODIFIED", elder)  # and back
    control.observe(elder)
    assert control.ownership.blocker(YOUNGER) == ELDER
    assert control.health()["libraries"] == 2


def test_a_published_claim_reads_what_the_other_instance_wrote() -> None:
    nodes = [
        {"address": "10.0.0.1:7000", "role": "primary", "shard": "node-1"},
        {"address": "10.0.0.2:7000", "role": "replica", "shard": "node-1"},
        {"address": "10.0.0.3:7000", "role": "primary", "shard": "node-3"},
    ]
    found = body("elder", "2026-01-01T00:00:00Z", libraryName="lib", nodes=nodes)
    found["spec"] = {"codeFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}, "target": {"endpoints": ["a:1"]}}
    claim = published_claim(found)
    assert claim.library == "lib"  # codeFrom: the name its own instance published
    assert claim.identities == ("node-1", "node-3")  # primaries only
    assert claim.created == "2026-01-01T00:00:00Z"
    assert claim.target == (("a:1",), "auto", None)


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("", {}, True),
        (f"{SHARD_KEY}=one", {SHARD_KEY: "one"}, True),
        (f"{SHARD_KEY}==one", {SHARD_KEY: "two"}, False),
        (f"{SHARD_KEY}=one", {}, False),
        (f"!{SHARD_KEY}", {}, True),
        (f"!{SHARD_KEY}", {SHARD_KEY: ""}, False),
        (SHARD_KEY, {SHARD_KEY: ""}, True),
        (f"{SHARD_KEY}=", {SHARD_KEY: ""}, True),
        (f"{SHARD_KEY}!=one", {}, True),
        (f"{SHARD_KEY} in (one, two)", {SHARD_KEY: "two"}, True),
        (f"{SHARD_KEY} notin (one,two)", {SHARD_KEY: "two"}, False),
        (f"{SHARD_KEY} notin (one,two)", {}, True),
        ("tier=web, env in (prod)", {"tier": "web", "env": "prod"}, True),
        ("tier=web,env in (prod)", {"tier": "web"}, False),
        ("replicas>2", {"replicas": "3"}, True),
        ("replicas<2", {"replicas": "x"}, False),
    ],
)
def test_label_selectors_match_as_the_api_server_filters(text: str, labels: dict[str, str], matches: bool) -> None:
    selector = LabelSelector.parse(text)
    assert selector.matches(labels) is matches
    assert LabelSelector.parse(str(selector)) == selector  # the canonical text kopf sends means the same


@pytest.mark.parametrize(
    "text", ["tier in prod", "a b", "Bad_Prefix/key", "x in ()", "a=b,", "=b", "a=b=c", "a>b", "a=" + "v" * 64, "!"]
)
def test_label_selectors_the_api_server_would_refuse_are_refused(text: str) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(text)
