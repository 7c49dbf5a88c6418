"""Ownership between objects wanting one library on one Redis: the oldest manages it, the others wait and take over."""

from __future__ import annotations

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
