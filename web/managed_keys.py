"""Trading keys created through the operator API, as every web process sees them.

A managed key is found by the SHA-256 digest of the presented key (the database holds only
that): in this process's cache, else in the database. The cache is what bounds a
revocation's reach and an attacker's:

- a key found is trusted for at most POSITIVE_TTL_S (2 s), then looked up again, so a
  revocation whose broadcast was lost still takes effect within that; the broadcast (a
  "keys" control message on the bus) makes it take effect at once, on every web process;
- a digest not found (unknown or revoked) is remembered for NEGATIVE_TTL_S (60 s), at most
  NEGATIVE_MAX of them (the oldest forgotten first): a key presented again and again costs
  no database read. A key created later was never presented before (it is random, and
  answered once created), and a creation's broadcast clears the negatives anyway;
- the lookups of one loop turn share one indexed query, and one query at a time is in
  flight per process (`LoopBatcher`): a flood of distinct unknown keys costs the database
  one query at a time, never one per request; past MAX_WAITING waiting lookups a request
  with a key not in the cache answers 503 `not_ready` (environment keys and cached keys
  are unaffected).

Everything here runs on the IOLoop thread, except `_lookup`, on the batcher's thread.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from web.loop_batches import LoopBatcher

POSITIVE_TTL_S = 2.0
NEGATIVE_TTL_S = 60.0
NEGATIVE_MAX = 10_000
MAX_BATCH = 256
MAX_WAITING = 1024

# digest (hex) -> (key id, owner), for the digests found among those asked
Lookup = Callable[[list[str]], dict[str, tuple[str, str]]]


class ManagedKeys:
    """The cache of managed keys in one web process, and its batched lookups."""

    def __init__(self, lookup: Lookup, clock: Callable[[], float] = time.monotonic):
        self._lookup_batch = lookup
        self._clock = clock
        self.positive_ttl_s = POSITIVE_TTL_S
        self._found: dict[str, tuple[str, str, float]] = {}  # digest -> (key id, owner, trusted until)
        self._unknown: OrderedDict[str, float] = OrderedDict()  # digest -> remembered until
        self._generation = 0  # raised by every change: a lookup that raced one is not remembered
        self._batches: LoopBatcher[str, tuple[str, str] | None] = LoopBatcher(
            self._lookup, "web-keys", MAX_BATCH, MAX_WAITING)

    def cached(self, digest: str) -> tuple[str, str] | bool | None:
        """(key id, owner) of a key found lately; False for a digest known not to be a key;
        None when the database must be asked."""
        found = self._found.get(digest)
        now = self._clock()
        if found is not None:
            if found[2] > now:
                return found[0], found[1]
            del self._found[digest]
        until = self._unknown.get(digest)
        if until is not None:
            if until > now:
                return False
            del self._unknown[digest]
        return None

    async def find(self, digest: str) -> tuple[str, str] | None:
        """(key id, owner) of the live key with this digest, or None; asks the database (with the
        other lookups of this loop turn) and remembers the answer."""
        generation = self._generation
        found = await self._batches.submit(digest)
        now = self._clock()
        if generation != self._generation:
            pass  # a key changed meanwhile: this answer may predate it, use it once only
        elif found is None:
            self._unknown[digest] = now + NEGATIVE_TTL_S
            self._unknown.move_to_end(digest)
            while len(self._unknown) > NEGATIVE_MAX:
                self._unknown.popitem(last=False)
        else:
            self._found[digest] = (found[0], found[1], now + self.positive_ttl_s)
        return found

    def _lookup(self, digests: list[str]) -> list[tuple[str, str] | None]:
        """The batcher's thread: one query for the batch's distinct digests."""
        found = self._lookup_batch(sorted(set(digests)))
        return [found.get(digest) for digest in digests]

    def changed(self, key_id: str | None) -> None:
        """A key was created or revoked (a "keys" message): forget what was cached about it,
        and every negative (a new key must never be refused because of one)."""
        self._generation += 1
        for digest, (known_id, _, _) in list(self._found.items()):
            if key_id is None or known_id == key_id:
                del self._found[digest]
        self._unknown.clear()

    def close(self) -> None:
        """Let the lookup thread go."""
        self._batches.close()
