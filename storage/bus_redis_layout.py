"""Where the Redis bus keeps things: key and channel names, on one server or on a Redis Cluster.

The bus spreads over `shards` job streams (BUS_SHARDS); an order's job always goes to the
stream its id hashes to. On one server the names are today's (`{prefix}:jobs` is shard 0,
one heartbeat key per consumer, one event channel). On a cluster every shard has a hash tag:
its stream, its copy of each consumer's heartbeat and its event channel share one hash slot,
so each script's keys do (the claim script reads a stream and a heartbeat key together), and
the tags are chosen so the shards' slots are evenly spaced over the 16384, which is how
`redis-cli --cluster create` spreads slots over masters: with shards a multiple of the masters,
each master gets as many shards.

A job id names its shard when there are several (`3/1764860000000-0`), so an ack goes to the
stream the job came from; with one shard it is the stream's entry id, as before. Every process
must use the same BUS_SHARDS: change it with all of them stopped (the reconciler queues again
whatever waited in streams the new count does not name).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """True for `redis+cluster://` and `rediss+cluster://` URLs."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _tag(prefix: str, shard: int, shards: int) -> str:
    """A hash tag whose slot lies in the shard's even share of the slots (found by trying suffixes)."""
    low = shard * REDIS_CLUSTER_HASH_SLOTS // shards
    high = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    suffix = 0
    while not low <= key_slot(f"{prefix}:{shard}:{suffix}".encode()) < high:
        suffix += 1
    return f"{{{prefix}:{shard}:{suffix}}}"


@dataclass(frozen=True)
class Layout:
    """The names the bus uses for `shards` shards, on a cluster or on one server (database `db`)."""

    prefix: str
    shards: int
    cluster: bool
    db: int = 0

    def __post_init__(self):
        if self.shards < 1:
            raise ValueError("a bus has at least one shard")
        tags = tuple(_tag(self.prefix, i, self.shards) for i in range(self.shards)) if self.cluster else ()
        object.__setattr__(self, "_tags", tags)

    # ---- jobs ----------------------------------------------------------------------------
    @property
    def streams(self) -> list[str]:
        """The job stream of each shard, in shard order."""
        if self.cluster:
            return [f"{tag}:jobs" for tag in self._tags]
        return [f"{self.prefix}:jobs"] + [f"{self.prefix}:jobs:{i}" for i in range(1, self.shards)]

    def shard_of(self, order_id: str) -> int:
        """The shard of an order: its job's stream and its events' channel."""
        return zlib.crc32(order_id.encode()) % self.shards if self.shards > 1 else 0

    def job_id(self, shard: int, entry_id: str) -> str:
        """The bus's job id for an entry of a shard's stream."""
        return f"{shard}/{entry_id}" if self.shards > 1 else entry_id

    def entry_of(self, job_id: str) -> tuple[int, str]:
        """(shard, stream entry id) of a job id."""
        shard, sep, entry = job_id.partition("/")
        return (int(shard), entry) if sep else (0, job_id)

    # ---- liveness ------------------------------------------------------------------------
    def heartbeat_keys(self, consumer: str) -> list[str]:
        """What a heartbeat sets: one key on one server; on a cluster a copy in each shard's slot."""
        if self.cluster:
            return [f"{tag}:consumer:{consumer}" for tag in self._tags]
        return [f"{self.prefix}:consumer:{consumer}"]

    def heartbeat_key(self, consumer: str, shard: int) -> str:
        """The heartbeat key the claim script of `shard`'s stream checks."""
        keys = self.heartbeat_keys(consumer)
        return keys[shard] if self.cluster else keys[0]

    @property
    def consumer_pattern(self) -> str:
        """A SCAN pattern of every heartbeat key (on a cluster, every shard's copies: a consumer
        is alive while any copy is, so one master's lost data does not hide it)."""
        return f"{{{self.prefix}:*}}:consumer:*" if self.cluster else f"{self.prefix}:consumer:*"

    @staticmethod
    def consumer_of(key: str) -> str:
        """The consumer a heartbeat key is of."""
        return key.split(":consumer:", 1)[1]

    # ---- events --------------------------------------------------------------------------
    @property
    def event_channels(self) -> list[str]:
        """One channel on one server (pub/sub channels are server-wide: named with the database
        index); on a cluster a sharded channel per shard, in its slot."""
        if self.cluster:
            return [f"{tag}:events" for tag in self._tags]
        return [f"{self.prefix}:{self.db}:events"]

    def channel_of(self, order_id: str) -> int:
        """Index in `event_channels` of the channel that carries an order's events."""
        return self.shard_of(order_id) if self.cluster else 0

    @property
    def control_channel(self) -> str:
        """Halts and key changes: rare, one (sharded, on a cluster) channel."""
        return f"{{{self.prefix}}}:control" if self.cluster else f"{self.prefix}:{self.db}:control"
