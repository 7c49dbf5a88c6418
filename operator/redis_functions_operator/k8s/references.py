"""The Secrets and ConfigMaps that libraries read, kept as the watch last delivered them.

The operator already watches Secrets and ConfigMaps (an edit must wake the libraries that read them). Without this
cache every reconcile still fetched its references: with an auth Secret and a thousand libraries, a thousand GETs
per resync period, and a thousand more, in a burst, whenever a target change wakes them all. Now a reconcile reads
what the watch delivered; the API is asked only on a miss (the watch has not delivered the object yet, or it is not
referenced by anything the operator has seen) or when an entry is older than ``max_age``.

Why it stays right:

* a watch event always replaces the entry, and is stored *before* the libraries it concerns are woken;
* a GET only fills a missing or expired entry, so an answer that left before a newer event arrived never
  overwrites it;
* a deletion is stored as "absent", so a reconcile reports SecretNotFound without asking;
* a deletion missed while the watch was down (a re-list delivers what exists, not what went) is corrected by
  ``max_age``: the entry is fetched again within ten minutes.

Only objects some library references are kept (Secrets of unrelated workloads, Helm release Secrets in particular,
can be large), and :meth:`keep_only` lets go of the ones no library reads any more.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis_functions_operator.reconcile.spec import RefKind

RefKey = tuple[RefKind, str, str]  # (kind, namespace, name)
Data = dict[str, bytes]


@dataclass(frozen=True)
class _Entry:
    data: Data | None  # None: known not to exist
    stored: float


class References:
    def __init__(self, max_age: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._entries: dict[RefKey, _Entry] = {}

    def watched(self, key: RefKey, body: Mapping[str, Any] | None) -> None:
        """A watch event: the object as it is now (``None``: deleted)."""
        data = None if body is None else decode(key[0], body)
        self._entries[key] = _Entry(data, self._clock())

    def knows(self, key: RefKey) -> bool:
        return key in self._entries

    def lookup(self, key: RefKey) -> tuple[bool, Data | None]:
        """``(True, data)`` when a fresh entry answers (``data`` None: the object does not exist), else
        ``(False, None)``: ask the API."""
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry.stored > self.max_age:
            return False, None
        return True, entry.data

    def fetched(self, key: RefKey, data: Data | None, asked_at: float) -> None:
        """What a GET sent at ``asked_at`` (this clock) returned; kept unless a watch event arrived since."""
        entry = self._entries.get(key)
        if entry is None or entry.stored < asked_at:
            self._entries[key] = _Entry(data, asked_at)

    def now(self) -> float:
        return self._clock()

    def keep_only(self, wanted: Iterable[RefKey]) -> None:
        keep = set(wanted)
        for key in [k for k in self._entries if k not in keep]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


def decode(kind: RefKind, body: Mapping[str, Any]) -> Data:
    """A Secret's data, or a ConfigMap's data and binaryData, as bytes (the shape the API's GET gives too)."""
    if kind is RefKind.SECRET:
        return {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
    data = {k: str(v).encode("utf-8") for k, v in (body.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (body.get("binaryData") or {}).items()})
    return data


__all__ = ["Data", "RefKey", "References", "decode"]
