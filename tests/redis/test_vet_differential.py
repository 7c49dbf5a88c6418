"""The vet, proven differentially: each library of a seeded corpus (tests/support/vet_corpus.py) is vetted, then
loaded into a throwaway real server and deleted again, and the two answers are compared.

What must hold on every sample, for each engine:
* the vet predicts a crash exactly when the server dies (during FUNCTION LOAD, or at the FUNCTION DELETE that
  follows a successful load): no library that takes a server down passes, and the crash rules refuse nothing that
  loads and deletes cleanly;
* otherwise the vet's answer is the server's: it loads exactly when the server loads it, with the same functions
  and flags, and when it does not, the vet's error is the server's reply, word for word.
Libraries the vet stops on (budget, memory, string cost, recursion: refused as undecidable) are not sent.

``make test`` runs a bounded slice (VET_CORPUS_SIZE, default 300, on Redis 7.0.15 and Valkey 9.1.2; VET_MATRIX_SIZE,
default 150, on each release ``make servers`` builds); the full proof is by hand:
``VET_CORPUS_SIZE=2000 VET_MATRIX_SIZE=2000 .venv/bin/python -m pytest tests/redis/test_vet_differential.py -s``.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis

from redis_functions_operator.library import LoadOutcome, vet
from redis_functions_operator.library.vet import BY_LABEL, run_loads
from tests.support import redis_servers as rs
from tests.support.vet_corpus import Sample, generate

SIZE = int(os.environ.get("VET_CORPUS_SIZE", "300"))
MATRIX_SIZE = int(os.environ.get("VET_MATRIX_SIZE", "150"))
SEED = int(os.environ.get("VET_CORPUS_SEED", "20261206"))
LIBRARY = "corpus"

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@dataclass
class Observed:
    """What one server did with one library."""

    loaded: bool = False
    functions: frozenset[tuple[str, frozenset[str]]] = frozenset()
    error: str | None = None
    crashed: str | None = None  # "load" or "delete" (a hang counts: the server stopped answering)


@dataclass
class Tally:
    sent: int = 0
    undecidable: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)


class Throwaway:
    """One server that libraries are loaded into and deleted from; restarted (empty) whenever one kills it."""

    def __init__(self, server: rs.RedisServer) -> None:
        self.server = server
        self.restarts = 0

    def client(self) -> redis.Redis:
        return self.server.client(protocol=2, retry=None, socket_connect_timeout=2, socket_timeout=5)

    def trial(self, code: bytes) -> Observed:
        client = self.client()
        try:
            return self._trial(client, code)
        except (redis.ConnectionError, redis.TimeoutError):
            return Observed(crashed=self._revive())
        finally:
            client.close()

    def _trial(self, client: redis.Redis, code: bytes) -> Observed:
        self.stage = "load"
        try:
            client.execute_command("FUNCTION", "LOAD", code)
        except redis.ResponseError as exc:
            client.ping()  # a reply, and still alive
            return Observed(error=str(exc))
        listing = client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY)
        self.stage = "delete"
        client.execute_command("FUNCTION", "DELETE", LIBRARY)
        client.ping()
        return Observed(loaded=True, functions=_functions(listing))

    def _revive(self) -> str:
        stage = self.stage
        with contextlib.suppress(rs.WaitTimeout):  # alive but not answering: a hang takes a server down too
            rs.wait_until(lambda: not self.server.is_running(), timeout=5, message="the server to exit")
        self.server.kill()
        self.server.start()
        self.restarts += 1
        return stage

    stage = "load"


def _functions(listing: list[list[object]]) -> frozenset[tuple[str, frozenset[str]]]:
    found = set()
    for library in listing:
        fields = dict(zip(library[::2], library[1::2], strict=True))
        for function in fields[b"functions"]:  # type: ignore[union-attr]
            info = dict(zip(function[::2], function[1::2], strict=True))
            flags = frozenset(flag.decode() for flag in info[b"flags"])
            found.add((info[b"name"].decode("latin-1"), flags))
    return frozenset(found)


def outcome_on(code: bytes, label: str) -> LoadOutcome:
    """The vet's answer for one server of the matrix: from the verdict the product uses when it holds that
    server's run, else from a run of that server's profile alone."""
    found = next((o for o in vet(code).outcomes if o.server == label), None)
    if found is not None:
        return found
    return run_loads(code[code.index(b"\n") :], (BY_LABEL[label],))[0][0]


def _compare(sample: Sample, outcome: LoadOutcome, observed: Observed, tally: Tally) -> None:
    label = "crash" if observed.crashed else "loads" if observed.loaded else "error"
    tally.outcomes[f"{sample.family}: {label}"] += 1
    problem = None
    if bool(outcome.crash) != bool(observed.crashed):
        problem = f"crash: vet says {outcome.crash!r}, the server {'died' if observed.crashed else 'lived'}"
    elif observed.crashed:
        return
    elif outcome.loads != observed.loaded:
        problem = f"loads: vet {outcome.loads} ({outcome.error}), server {observed.loaded} ({observed.error})"
    elif observed.loaded:
        vetted = frozenset((f.name, frozenset(f.flags)) for f in outcome.functions)
        if vetted != observed.functions:
            problem = f"functions: vet {sorted(vetted)}, server {sorted(observed.functions)}"
    else:
        said = str(outcome.error).encode("latin-1").decode("utf-8", "replace")
        if said != observed.error:
            problem = f"error: vet {said!r}, server {observed.error!r}"
    if problem is not None:
        tally.mismatches.append(f"{problem}\n--- {sample.family} ---\n{sample.code.decode('utf-8', 'replace')}")


def prove(
    server: rs.RedisServer, label: str, seed: int, samples: list[Sample], out: pytest.CaptureFixture[str]
) -> Throwaway:
    """Send every sample the vet does not stop on to ``server`` and compare; print the tally; fail on the first
    disagreement."""
    throwaway = Throwaway(server)
    tally = Tally()
    for sample in samples:
        outcome = outcome_on(sample.code, label)
        if outcome.stopped:
            tally.undecidable += 1
            continue
        tally.sent += 1
        _compare(sample, outcome, throwaway.trial(sample.code), tally)
    with out.disabled():
        print(f"\n{label}: {len(samples)} libraries (seed {seed}), {tally.sent} sent, {tally.undecidable} refused as "
              f"undecidable and not sent, {throwaway.restarts} server deaths")  # fmt: skip
        for key, count in sorted(tally.outcomes.items()):
            print(f"  {key}: {count}")
    assert not tally.mismatches, f"{len(tally.mismatches)} disagreements; the first:\n" + tally.mismatches[0]
    return throwaway


#: The vet's profile of each server of the matrix.
PROFILE_OF = {
    "redis": "Redis 7.0.15",
    "valkey": "Valkey 9.1.2",
    "redis-7.2.6": "Redis 7.2.6",
    "redis-7.4.1": "Redis 7.4.1",
    "redis-8.0-m01": "Redis 8.0-m01",
    "valkey-7.2.7": "Valkey 7.2.7",
    "valkey-8.0.1": "Valkey 8.0.1",
}


@pytest.mark.parametrize("flavor", rs.FLAVORS)
def test_the_vet_answers_as_the_server_does(
    server_factory: Callable[..., rs.RedisServer], flavor: str, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = generate(SEED, SIZE)
    throwaway = prove(server_factory(flavor), PROFILE_OF[flavor], SEED, samples, capsys)
    # the corpus exercises what it claims to: deaths on both engines, and every family
    assert throwaway.restarts > 0
    assert {s.family for s in samples} == {"log-route", "case-route", "mutant", "program"}


@pytest.mark.parametrize("flavor", rs.BUILT)
def test_the_vet_answers_as_every_server_of_the_matrix_does(
    server_factory: Callable[..., rs.RedisServer], flavor: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same proof, smaller, on each release built from ../shared/servers (``make servers``)."""
    assert set(PROFILE_OF) == set(rs.MATRIX)
    prove(server_factory(flavor), PROFILE_OF[flavor], SEED + 1, generate(SEED + 1, MATRIX_SIZE), capsys)
