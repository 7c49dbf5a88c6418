"""Which object manages a library, when several objects want the same library on the same Redis.

Redis holds one copy of a library per server: two objects loading different code under one name would overwrite
each other on every resync. The rule is simple and stable: the **oldest** object (creationTimestamp, then
namespace/name) manages it; the others report ``ResourceConflict`` and take over when it goes.

"The same Redis" is judged twice, because neither view alone is enough:

* **as written** — the target's sorted endpoints, mode and sentinel master. Known without any I/O, so a conflict
  is seen before either object touches Redis, even while the servers are down;
* **as discovered** — each primary's identity (the cluster node id, else the server's ``run_id``). Two spellings of
  one server (``localhost:6379`` and ``127.0.0.1:6379``, two seed nodes of one cluster, a Service name and a pod
  IP) share their primaries, so they conflict too. These claims are only known after a discovery, so they are
  updated on every reconcile.

A claim is a *unit* (one of the above plus the library name); an object is blocked when, for any unit it holds, an
elder object holds the same unit. Discovered claims exist only after a lookup, so an object also waits while an
elder wanting the same library name has not been looked up yet (right after a restart, every object is queued at
once, and the younger one must not load its code first). Whenever a unit gains or loses a holder, the other
holders are woken so each one re-checks: that is how a younger object learns it lost the library, and how it takes
over when the elder goes.

**Across shards** (several instances, each reconciling the objects its ``--label-selector`` matches), an instance
also holds the claims of every object outside its shard, read from an unfiltered watch and never written
(:meth:`Ownership.claim_published`): the target as written, and the cluster node ids the other instance published in
``status.nodes``. So two shards agree on the elder. What they cannot share is a discovery they did not publish: two
spellings of one *standalone or Sentinel* server in two different shards are not recognised as one Redis (the
server's ``run_id`` is not in the status); keep such objects in one shard, or spell the target the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

Key = tuple[str, str]  # (namespace, name)
Unit = tuple[str, Hashable]  # ("spec" | "server", what) — what already includes the library name


class Ownership:
    def __init__(self, created: Callable[[Key], str | None], wake: Callable[[Key], None]) -> None:
        """``created`` gives a live object's creationTimestamp (``None``: the object is gone); ``wake`` queues one."""
        self._created = created
        self._wake = wake
        self._holders: dict[Unit, set[Key]] = {}
        self._spec: dict[Key, frozenset[Unit]] = {}
        self._servers: dict[Key, frozenset[Unit]] = {}
        self._library: dict[Key, str] = {}  # what each object wants, as far as known
        self._wanting: dict[str, set[Key]] = {}  # and the other way round
        self._discovered: set[Key] = set()  # objects whose servers were looked up at least once
        #: per library, the objects wanting it whose servers were never looked up: asked on every reconcile, so it
        #: is an index (a scan of every object wanting "cache" cost a thousand steps per resync at 1000 targets)
        self._undiscovered: dict[str, set[Key]] = {}

    def claim_as_written(self, key: Key, target: Hashable, library: str) -> None:
        """``key`` wants ``library`` on the target as its spec writes it."""
        self._want(key, library)
        self._replace(self._spec, key, frozenset({("spec", (target, library))}))

    def claim_servers(self, key: Key, library: str, identities: Iterable[str]) -> None:
        """``key`` wants ``library`` on these primaries (their :attr:`Node.identity`), as just discovered (none when
        discovery failed: the lookup still counts as done)."""
        self._want(key, library)
        self._discover(key)
        self._replace(self._servers, key, frozenset(("server", (library, i)) for i in identities))

    def claim_published(
        self, key: Key, target: Hashable | None, library: str | None, identities: Iterable[str]
    ) -> None:
        """``key`` belongs to another instance (another shard): this one only reads it. What it wants as written, plus
        the primaries its own instance published in its status. It counts as looked up, since nobody here will ever
        discover its servers: waiting for that would wait forever."""
        if library is None:
            self.release(key)
            return
        self._want(key, library)
        self._discover(key)
        written = frozenset({("spec", (target, library))}) if target is not None else frozenset()
        self._replace(self._spec, key, written)
        self._replace(self._servers, key, frozenset(("server", (library, i)) for i in identities))

    def release(self, key: Key) -> None:
        """The object is gone (or wants nothing any more): its claims go, and the others re-check."""
        self._replace(self._spec, key, frozenset())
        self._replace(self._servers, key, frozenset())
        self._want(key, None)
        self._discovered.discard(key)

    def blocker(self, key: Key) -> Key | None:
        """The elder object that manages a library ``key`` also claims, or ``None`` when ``key`` may act."""
        mine = self._order(key)
        if mine is None:
            return None
        elders = [order for other in self._rivals(key) if (order := self._order(other)) is not None and order < mine]
        return min(elders)[1] if elders else None

    def undiscovered_elder(self, key: Key) -> Key | None:
        """An elder object wanting the same library whose servers are not known yet (typically right after the
        operator starts, when every object is queued at once). ``key`` should wait for it: if they turn out to share
        a primary, acting first would put the younger object's code on it for a moment."""
        mine, library = self._order(key), self._library.get(key)
        if mine is None or library is None:
            return None
        for other in self._undiscovered.get(library, ()):
            if other != key:
                order = self._order(other)
                if order is not None and order < mine:
                    return other
        return None

    def rivals(self, key: Key) -> list[Key]:
        """Every other live object sharing a claim with ``key`` (e.g. still wanting the library it would delete)."""
        return sorted(k for k in self._rivals(key) if self._created(k) is not None)

    # --- internals ------------------------------------------------------------------------------------------------

    def _want(self, key: Key, library: str | None) -> None:
        old = self._library.pop(key, None)
        if old is not None:
            _discard(self._wanting, old, key)
            _discard(self._undiscovered, old, key)
        if library is not None:
            self._library[key] = library
            self._wanting.setdefault(library, set()).add(key)
            if key not in self._discovered:
                self._undiscovered.setdefault(library, set()).add(key)

    def _discover(self, key: Key) -> None:
        self._discovered.add(key)
        library = self._library.get(key)
        if library is not None:
            _discard(self._undiscovered, library, key)

    def _rivals(self, key: Key) -> set[Key]:
        units = self._spec.get(key, frozenset()) | self._servers.get(key, frozenset())
        return {other for unit in units for other in self._holders.get(unit, ()) if other != key}

    def _order(self, key: Key) -> tuple[str, Key] | None:
        created = self._created(key)
        return None if created is None else (created, key)

    def _replace(self, table: dict[Key, frozenset[Unit]], key: Key, units: frozenset[Unit]) -> None:
        old = table.get(key, frozenset())
        if old == units:
            return
        if units:
            table[key] = units
        else:
            table.pop(key, None)
        touched: set[Key] = set()
        for unit in old - units:
            holders = self._holders.get(unit, set())
            holders.discard(key)
            touched |= holders
            if not holders:
                self._holders.pop(unit, None)
        for unit in units - old:
            holders = self._holders.setdefault(unit, set())
            touched |= holders
            holders.add(key)
        for other in sorted(touched - {key}):
            self._wake(other)


__all__ = ["Key", "Ownership"]


def _discard(index: dict[str, set[Key]], library: str, key: Key) -> None:
    holders = index.get(library)
    if holders is not None:
        holders.discard(key)
        if not holders:
            del index[library]
