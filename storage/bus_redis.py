"""The Redis bus: production transport between web processes and workers.

- Shards and a Redis Cluster: `storage.bus_redis_layout` names the keys. With BUS_SHARDS
  above 1 there is a job stream per shard (an order's is chosen from its id), a worker reads
  them all (`_fetch_spread`), and each stream keeps the semantics below. A `redis+cluster://`
  URL opens a cluster client: each script's keys share their shard's hash slot, events go
  out on each shard's sharded channel (SPUBLISH), and pipelined scripts are sent as EVAL
  (a promoted replica may lack a loaded script; the script cache is per node).
- Jobs: stream `{prefix}:jobs`, consumer group `workers`. `ack` removes the entry
  (XACK + XDEL), so the stream holds only waiting and pending jobs and
  `queue_depth` = XLEN - pending. The oldest waiting job is the first entry after the
  group's last-delivered id, and its age comes from its id (a millisecond timestamp of
  Redis's clock) against Redis's `TIME`. A Redis restart without persistence deletes the
  stream and its group; the group is recreated on the NOGROUP error that follows.
- Liveness: `{prefix}:consumer:{name}` with a TTL. A consumer without that key is
  dead, including one that never sent a heartbeat: workers heartbeat before their
  first fetch. `claim_abandoned` takes jobs only from dead consumers, atomically.
- Rate: sliding window in the sorted set `{prefix}:starts`, timed by Redis's own
  clock so every worker counts against the same window; a fetched batch is counted at once.
  Submissions per API key the same way, one sorted set per owner (`{prefix}:submits:{owner}`),
  a whole batch of the web's submits in one script call; the web's other per-caller limits
  likewise, each kind its own sets (`{prefix}:{kind}:{caller}`, e.g. `rate:quotes`).
- Events: one PUBLISH per batch on `{prefix}:{db}:events` (`storage.bus.encode_events`);
  best effort. Control messages (JSON objects) on `{prefix}:{db}:control`, the same way.
- A web process's intake queues a batch of orders, publishes their `pending` events and
  reads the queue depth in one pipeline (`accept`).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from storage import codec
from storage.bus import (Accepted, Bus, ControlHandler, EventBatchHandler, Job, QueueStats, Subscription,
                         decode_events, encode_events)
from storage.bus_redis_layout import CLUSTER_SCHEMES, Layout, is_cluster_url
from storage.bus_redis_pubsub import REDIS_ERRORS, RedisSubscription, Subscriptions, open_pubsub, open_sharded
from storage.errors import BusError
from storage.records import BusEvent

log = logging.getLogger(__name__)

GROUP = "workers"
# A consumer with no jobs is removed from the group only after this long without a
# read, so a worker that is between fetches is never touched (it is alive anyway).
_IDLE_CONSUMER_MS = 60_000

# Claim the jobs of one consumer if (and only if) its heartbeat key is gone; checking
# and claiming in one script means two claimers can never steal from each other.
# KEYS: stream, heartbeat key of the dead consumer. ARGV: group, dead, claimer, count.
_CLAIM_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])
local claimed = {}
if #held > 0 then
  local ids = {}
  for i, entry in ipairs(held) do ids[i] = entry[1] end
  claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, unpack(ids))
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return claimed
"""

# Sliding-window start limit. KEYS: starts zset. ARGV: limit, window seconds, member prefix, count.
# Counts up to `count` starts; returns {counted, '0'} when all were, else {counted, seconds
# until the oldest start leaves the window}.
_TRY_START_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[2])
local want = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local room = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local n = math.max(0, math.min(want, room))
if n > 0 then
  local args = {}
  for i = 1, n do
    args[2 * i - 1] = now
    args[2 * i] = ARGV[3] .. ':' .. i
  end
  redis.call('ZADD', KEYS[1], unpack(args))
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
end
if n == want then return {n, '0'} end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {n, tostring(tonumber(oldest[2]) + window - now)}
"""
# Sliding-window submission limit per owner. KEYS: one zset per submission (an owner's key may
# repeat). ARGV: limit, window seconds, member prefix. Returns per submission '0' when counted,
# else the seconds until the owner's oldest counted submission leaves the window.
_TRY_SUBMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local waits = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now, ARGV[3] .. ':' .. i)
    redis.call('PEXPIRE', key, math.ceil(window * 1000) + 1000)
    waits[i] = '0'
  else
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    waits[i] = tostring(math.max(tonumber(oldest[2]) + window - now, 0.000001))
  end
end
return waits
"""
# The queue's depth and the age of its oldest waiting job, in one round trip, on one clock.
# KEYS: stream. ARGV: group. Returns {waiting jobs, age of the oldest in ms (0 when none)}.
# The first entry after the group's last-delivered id was never delivered: it waits.
_QUEUE_STATS_LUA = """
local length = redis.call('XLEN', KEYS[1])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
local last = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
  if fields['name'] == ARGV[1] then last = fields['last-delivered-id'] end
end
if last == nil then return redis.error_reply('NOGROUP no consumer group ' .. ARGV[1]) end
local age = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], last, '+', 'COUNT', 2)) do
  if entry[1] ~= last then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    age = math.max(now_ms - tonumber(string.match(entry[1], '^(%d+)')), 0)
    break
  end
end
return {math.max(length - pending, 0), age}
"""
# With several shards an idle worker blocks on one stream at a time, this long, then looks at
# all of them again (a blocking read cannot span hash slots): the most a job waits for an idle
# worker when it lands on another shard.
SPREAD_BLOCK_MS = 20
MAX_STARTS_PER_CALL = 1000  # Lua's unpack takes a few thousand arguments at most

# Delete a lock only if the caller still holds it. KEYS: lock. ARGV: owner.
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _decode_control(data: bytes) -> dict:
    """A control message: a JSON object (ValueError for anything else)."""
    message = codec.loads(data)
    if not isinstance(message, dict):
        raise ValueError("a control message is a JSON object")
    return message


def _group_missing(exc: redis.ResponseError) -> bool:
    # XINFO on a deleted stream says "no such key"; the other commands say NOGROUP.
    message = str(exc)
    return "NOGROUP" in message or "no such key" in message


class RedisBus(Bus):
    """The bus on one Redis server or a Redis Cluster; every method may raise BusError."""

    def __init__(self, url: str, prefix: str = "engine", *, shards: int = 1, socket_timeout: float = 10.0,
                 connect_timeout: float = 2.0):
        self._cluster = is_cluster_url(url)
        if self._cluster:
            scheme, rest = url.split("://", 1)
            url = f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}"
        # Pub/sub channels are server-wide, not per database index: the layout names the index
        # so deployments (and test runs) on different indexes of one server stay apart.
        self._layout = Layout(prefix, shards, self._cluster, redis.connection.parse_url(url).get("db", 0))
        self._streams = self._layout.streams
        self._jobs = self._streams[0]
        self._starts = f"{prefix}:starts"
        self._channel = self._layout.event_channels[0]
        self._control_channel = self._layout.control_channel
        self._epoch_key = f"{prefix}:epoch"
        self._next_shard = 0  # where a spread fetch starts: each shard gets its turn first
        # A blocking XREADGROUP must come back before the socket times out.
        self._max_block_ms = int((socket_timeout - 1.0) * 1000)
        options = dict(socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                       health_check_interval=15, decode_responses=True)
        # Retry briefly (a pooled socket may be stale after a Redis restart), then let
        # BusError reach the caller instead of redis-py's default ~10 retries.
        if self._cluster:
            # A failover takes the cluster's node timeout and an election: retry across it (the
            # client refreshes its slot map between tries) rather than fail the caller at once.
            self._client = redis.RedisCluster.from_url(
                url, retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 8), **options)
        else:
            self._client = redis.Redis.from_url(
                url, retry=Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.01), 2), **options)
        # Subscriptions do their own reconnecting (with backoff, logged), so their
        # client must surface a dropped connection instead of hiding it. Messages stay
        # bytes: each event's JSON goes to listeners as it came.
        # Named, so an operator (or a test) can find these connections in CLIENT LIST.
        self._pubsub_options = dict(retry=Retry(NoBackoff(), 0), client_name=f"{prefix}-subscriber",
                                    **{**options, "decode_responses": False})
        self._url = url
        self._pubsub_client = None if self._cluster else redis.Redis.from_url(url, **self._pubsub_options)
        self._node_clients: dict[tuple[str, int], redis.Redis] = {}  # a cluster's subscriber clients, by node
        self._prefix = prefix
        self._claim_script = self._client.register_script(_CLAIM_LUA)
        self._unlock_script = self._client.register_script(_UNLOCK_LUA)
        self._try_start_script = self._client.register_script(_TRY_START_LUA)
        self._try_submit_script = self._client.register_script(_TRY_SUBMIT_LUA)
        self._queue_stats_script = self._client.register_script(_QUEUE_STATS_LUA)
        self._group_ready = False
        self._subscriptions: set[RedisSubscription] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def shards(self) -> int:
        """How many job streams (BUS_SHARDS) this bus spreads orders over."""
        return len(self._streams)

    # ---- plumbing ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")

    def _call(self, action: str, fn, *, needs_group: bool = False):
        """Run `fn()`, mapping redis errors to BusError; recreate a lost group once."""
        self._check_open()
        for attempt in (1, 2):
            try:
                if needs_group and not self._group_ready:
                    self._create_group()
                return fn()
            except redis.ResponseError as exc:
                if needs_group and attempt == 1 and _group_missing(exc):
                    log.warning("consumer group of %s is gone (Redis restarted without "
                                "persistence?); recreating it", self._jobs)
                    self._group_ready = False
                    continue
                raise BusError(f"redis refused {action}: {exc}") from exc
            except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                raise BusError(f"redis unavailable for {action}: {exc}") from exc

    def _create_group(self) -> None:
        for stream in self._streams:
            try:
                # Id 0: jobs added before the group existed (e.g. right after a restart) count.
                self._client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    def _heartbeat_key(self, consumer: str, shard: int = 0) -> str:
        return self._layout.heartbeat_key(consumer, shard)

    def _script(self, script, keys: list, args: list, pipe) -> None:
        """Queue a script call on `pipe`: EVALSHA on one server; EVAL on a cluster, where a
        cluster pipeline has no script support and a promoted replica may lack the script."""
        if self._cluster:
            pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
        else:
            script(keys=keys, args=args, client=pipe)

    def _shard_of_job(self, job: Job) -> int:
        return self._layout.entry_of(job.job_id)[0]

    # ---- jobs ----------------------------------------------------------------------------
    def enqueue(self, order_id: str) -> str:
        """XADD the order to the jobs stream; the entry id is the job id."""
        shard = self._layout.shard_of(order_id)
        return self._call("enqueue", lambda: self._layout.job_id(
            shard, self._client.xadd(self._streams[shard], {"order_id": order_id})))

    def accept(self, order_ids: list[str], events: list[BusEvent]) -> Accepted:
        """XADD each order, PUBLISH the events and read the queue's stats (depth, oldest
        waiting job's age), in one pipeline.

        A consumer group lost with Redis's data (NOGROUP from the stats, after the XADDs went
        through) is created again afterwards, and the depth is then the jobs just added.
        (redis-py may send the pipeline again after a connection error: a job added twice
        runs its order once, the first job to claim it binds it.)
        """
        shards = [self._layout.shard_of(order_id) for order_id in order_ids]
        n_streams = len(self._streams)

        def run() -> Accepted:
            pipe = self._client.pipeline(transaction=False)
            for order_id, shard in zip(order_ids, shards):
                pipe.xadd(self._streams[shard], {"order_id": order_id})
            published = self._queue_publish(pipe, events) if events else 0
            for stream in self._streams:
                self._script(self._queue_stats_script, [stream], [GROUP], pipe)
            replies = pipe.execute(raise_on_error=False)
            failed = next((r for r in replies[:-n_streams] if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
            job_ids = [self._layout.job_id(shard, entry) for shard, entry in zip(shards, replies[:len(order_ids)])]
            all_stats = replies[len(order_ids) + published:]
            if any(isinstance(stats, redis.ResponseError) and _group_missing(stats) for stats in all_stats):
                self._group_ready = False
                self._create_group()
                return Accepted(job_ids, len(order_ids))
            failed = next((stats for stats in all_stats if isinstance(stats, Exception)), None)
            if failed is not None:
                raise failed
            depth = sum(int(stats[0]) for stats in all_stats)
            return Accepted(job_ids, depth, max(int(stats[1]) for stats in all_stats) / 1000.0)

        return self._call("accept", run)

    def queue_depth(self) -> int:
        """Entries in the stream minus those delivered and not yet acknowledged."""
        if len(self._streams) > 1:
            return self.queue_stats().depth

        def depth() -> int:
            pipe = self._client.pipeline(transaction=True)
            pipe.xlen(self._jobs)
            pipe.xpending(self._jobs, GROUP)
            length, summary = pipe.execute()
            return max(length - summary["pending"], 0)

        return self._call("queue_depth", depth, needs_group=True)

    def queue_stats(self) -> QueueStats:
        """The depth as `queue_depth` counts it and the oldest waiting job's age (one script call)."""
        if len(self._streams) == 1:
            depth, age_ms = self._call("queue_stats", lambda: self._queue_stats_script(keys=[self._jobs], args=[GROUP]),
                                       needs_group=True)
            return QueueStats(int(depth), int(age_ms) / 1000.0)

        def read() -> list:
            pipe = self._client.pipeline(transaction=False)
            for stream in self._streams:
                self._script(self._queue_stats_script, [stream], [GROUP], pipe)
            return pipe.execute()

        all_stats = self._call("queue_stats", read, needs_group=True)
        return QueueStats(sum(int(depth) for depth, _ in all_stats), max(int(age) for _, age in all_stats) / 1000.0)

    def fetch(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        """XREADGROUP new entries; waits at most `block_ms` (capped below the socket timeout)."""
        # BLOCK 0 would mean "forever" to Redis; 0 here means "do not wait".
        block = min(block_ms, self._max_block_ms) if block_ms > 0 else None
        if len(self._streams) > 1:
            return self._call("fetch", lambda: self._fetch_spread(consumer, count, block), needs_group=True)
        return self._call("fetch", lambda: self._read(consumer, 0, count, block), needs_group=True)

    def _read(self, consumer: str, shard: int, count: int, block: int | None) -> list[Job]:
        try:
            reply = self._client.xreadgroup(GROUP, consumer, {self._streams[shard]: ">"}, count=count, block=block)
        except redis.ResponseError as exc:
            if "UNBLOCKED" not in str(exc):
                raise
            # The stream vanished under a blocked read (Redis flushed or restarted):
            # nothing to hand out; the next call recreates the group.
            self._group_ready = False
            return []
        return self._jobs_of(shard, reply)

    def _jobs_of(self, shard: int, reply) -> list[Job]:
        job_id = self._layout.job_id
        return [Job(job_id(shard, entry), fields["order_id"]) for _, entries in reply or [] for entry, fields in entries]

    def _fetch_spread(self, consumer: str, count: int, block: int | None) -> list[Job]:
        """Several shards: read the streams without waiting, `count` split between them (never
        more jobs than asked); while none had a job, wait on one stream at a time, each shard in
        turn, at most SPREAD_BLOCK_MS before reading all again (a blocking read cannot span hash
        slots), until `block` ms have passed."""
        n = len(self._streams)
        first, self._next_shard = self._next_shard, (self._next_shard + 1) % n
        deadline = time.monotonic() + (block or 0) / 1000
        waiting_on = first
        while True:
            jobs = self._read_spread(consumer, count, [(first + k) % n for k in range(n)])
            left_ms = int((deadline - time.monotonic()) * 1000)
            if jobs or left_ms <= 0:
                return jobs
            jobs = self._read(consumer, waiting_on, count, min(left_ms, SPREAD_BLOCK_MS))
            if jobs:
                return jobs
            waiting_on = (waiting_on + 1) % n

    def _read_spread(self, consumer: str, count: int, order: list[int]) -> list[Job]:
        """Up to `count` waiting jobs from the streams in `order`, a pipelined read of them all a
        round: the count left is split between the streams that may hold more (a stream that
        gave fewer than asked is empty), until it is reached or every stream is empty."""
        jobs: list[Job] = []
        candidates = order
        while candidates and len(jobs) < count:
            left = count - len(jobs)
            shares = {i: left // len(candidates) + (1 if k < left % len(candidates) else 0)
                      for k, i in enumerate(candidates)}
            asked = [i for i in candidates if shares[i]]
            pipe = self._client.pipeline(transaction=False)
            for i in asked:
                pipe.xreadgroup(GROUP, consumer, {self._streams[i]: ">"}, count=shares[i])
            replies = pipe.execute(raise_on_error=False)
            failed = next((r for r in replies if isinstance(r, Exception)), None)
            if failed is not None:
                if jobs:  # those are ours now: hand them out; the next fetch meets the error again
                    return jobs
                raise failed
            candidates = [i for i in candidates if i not in shares or not shares[i]]
            for i, reply in zip(asked, replies):
                got = self._jobs_of(i, reply)
                jobs.extend(got)
                if len(got) == shares[i]:
                    candidates.append(i)
        return jobs

    def ack(self, *jobs: Job) -> None:
        """XACK and XDEL together, so the stream keeps only unfinished jobs."""
        if not jobs:
            return
        by_shard: dict[int, list[str]] = {}
        for job in jobs:
            shard, entry = self._layout.entry_of(job.job_id)
            if shard < len(self._streams):  # else from a larger BUS_SHARDS: that stream is not read any more
                by_shard.setdefault(shard, []).append(entry)

        def forget() -> None:
            for shard, ids in by_shard.items():  # a transaction cannot span hash slots
                pipe = self._client.pipeline(transaction=True)
                pipe.xack(self._streams[shard], GROUP, *ids)
                pipe.xdel(self._streams[shard], *ids)
                pipe.execute()

        self._call("ack", forget, needs_group=True)

    def heartbeat(self, consumer: str, ttl_s: float) -> None:
        """SET the consumer's liveness key with a TTL of `ttl_s`."""
        ttl_ms = max(int(ttl_s * 1000), 1)
        keys = self._layout.heartbeat_keys(consumer)
        if len(keys) == 1:
            self._call("heartbeat", lambda: self._client.set(keys[0], "1", px=ttl_ms))
            return

        def beat() -> None:  # a copy in each shard's slot, for that shard's claim script
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, "1", px=ttl_ms)
            pipe.execute()

        self._call("heartbeat", beat)

    def retire(self, consumer: str) -> None:
        """DEL the consumer's liveness key: it counts as dead at once."""
        keys = self._layout.heartbeat_keys(consumer)

        def forget() -> None:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            pipe.execute()

        self._call("retire", forget if len(keys) > 1 else lambda: self._client.delete(keys[0]))

    def queued_order_ids(self) -> set[str]:
        """The order of every entry in the jobs stream (it holds only waiting and pending jobs)."""
        def scan() -> set[str]:
            return set().union(*(self._scan_stream(stream, "-") for stream in self._streams))

        return self._call("queued_order_ids", scan)

    def waiting_order_ids(self) -> set[str]:
        """The order of every entry after its stream's last delivered one (never fetched)."""
        def scan() -> set[str]:
            pipe = self._client.pipeline(transaction=False)
            for stream in self._streams:
                pipe.xinfo_groups(stream)
            found = set()
            for stream, groups in zip(self._streams, pipe.execute()):
                last = next((g["last-delivered-id"] for g in groups if g["name"] == GROUP), "0-0")
                found.update(self._scan_stream(stream, "(" + last))
            return found

        return self._call("waiting_order_ids", scan, needs_group=True)

    def _scan_stream(self, stream: str, start: str) -> set[str]:
        """The orders of a stream's entries from `start` on, read a thousand at a time."""
        found = set()
        while True:
            entries = self._client.xrange(stream, min=start, count=1000)
            found.update(fields.get("order_id") for _, fields in entries)
            if len(entries) < 1000:
                return found
            start = "(" + entries[-1][0]  # exclusive: after the last one read

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """SET NX PX: the lock is ours unless someone holds it (ours again if we do)."""
        key, ttl_ms = f"{self._prefix}:lock:{name}", max(int(ttl_s * 1000), 1)

        def take() -> bool:
            if self._client.set(key, owner, nx=True, px=ttl_ms):
                return True
            return self._client.get(key) == owner and bool(self._client.set(key, owner, xx=True, px=ttl_ms))

        return self._call("try_lock", take)

    def unlock(self, name: str, owner: str) -> None:
        """Delete the lock if `owner` holds it (a script: check and delete at once)."""
        self._call("unlock", lambda: self._unlock_script(keys=[f"{self._prefix}:lock:{name}"], args=[owner]))

    def live_consumers(self) -> set[str]:
        """Names of the consumers whose heartbeat key still exists."""
        def scan() -> set[str]:
            keys = self._client.scan_iter(match=self._layout.consumer_pattern, count=500)
            return {self._layout.consumer_of(key) for key in keys}
        return self._call("live_consumers", scan)

    def ensure_epoch(self) -> tuple[str, bool]:
        """GET the epoch key, or SET NX a new one (then this caller created it)."""
        def epoch() -> tuple[str, bool]:
            new = uuid.uuid4().hex
            if self._client.set(self._epoch_key, new, nx=True):
                return new, True
            return self._client.get(self._epoch_key), False
        return self._call("ensure_epoch", epoch)

    def claim_abandoned(self, consumer: str, count: int) -> list[Job]:
        """XCLAIM for `consumer` the jobs of group members whose heartbeat key is gone."""
        def claim() -> list[Job]:
            pipe = self._client.pipeline(transaction=False)
            for stream in self._streams:
                pipe.xinfo_consumers(stream, GROUP)
            jobs: list[Job] = []
            for shard, members in enumerate(pipe.execute()):
                for member in members:
                    name = member["name"]
                    if len(jobs) >= count:
                        return jobs
                    if name == consumer or (member["pending"] == 0 and member["idle"] < _IDLE_CONSUMER_MS):
                        continue
                    claimed = self._claim_script(
                        keys=[self._streams[shard], self._heartbeat_key(name, shard)],
                        args=[GROUP, name, consumer, count - len(jobs)])
                    for entry in claimed:
                        if entry:  # entries deleted meanwhile come back empty on older Redis
                            entry_id, flat = entry
                            fields = dict(zip(flat[::2], flat[1::2]))
                            jobs.append(Job(self._layout.job_id(shard, entry_id), fields["order_id"]))
                    if claimed:
                        log.warning("consumer %s took %d job(s) of dead consumer %s", consumer, len(claimed), name)
            return jobs

        return self._call("claim_abandoned", claim, needs_group=True)

    # ---- rate ----------------------------------------------------------------------------
    def try_start(self, limit: int, window_s: float, count: int = 1) -> tuple[int, float]:
        """Count up to `count` starts in the shared window (one script call for the batch)."""
        count = min(count, MAX_STARTS_PER_CALL)
        member = uuid.uuid4().hex
        allowed, wait = self._call("try_start", lambda: self._try_start_script(
            keys=[self._starts], args=[limit, float(window_s), member, count]))
        if allowed == count:
            return allowed, 0.0
        return allowed, max(float(wait), 1e-6)  # 0.0 would read as "all allowed"

    def try_submit(self, owners: list[str], limit: int, window_s: float, kind: str = "submits") -> list[float]:
        """Count a batch of requests in the owners' shared windows of `kind` (one script call)."""
        if not owners:
            return []
        keys = [f"{self._prefix}:{kind}:{owner}" for owner in owners]
        member = uuid.uuid4().hex
        if self._cluster:
            return self._call("try_submit", lambda: self._try_submit_per_key(keys, limit, window_s, member))
        waits = self._call("try_submit", lambda: self._try_submit_script(
            keys=keys, args=[limit, float(window_s), member]))
        return [float(wait) for wait in waits]

    def _try_submit_per_key(self, keys: list[str], limit: int, window_s: float, member: str) -> list[float]:
        """On a cluster each owner's window is in its own slot: a script call per owner (its
        repeats in order, as one call counts them), all in one pipeline."""
        positions: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            positions.setdefault(key, []).append(i)
        pipe = self._client.pipeline(transaction=False)
        for n, (key, where) in enumerate(positions.items()):
            self._script(self._try_submit_script, [key] * len(where), [limit, float(window_s), f"{member}.{n}"], pipe)
        waits = [0.0] * len(keys)
        for where, answers in zip(positions.values(), pipe.execute()):
            for i, wait in zip(where, answers):
                waits[i] = float(wait)
        return waits

    # ---- events --------------------------------------------------------------------------
    def publish(self, events: list[BusEvent]) -> None:
        """PUBLISH the batch as one message."""
        if not self._cluster:
            payload = encode_events(events)
            self._call("publish", lambda: self._client.publish(self._channel, payload))
            return

        def send() -> None:
            pipe = self._client.pipeline(transaction=False)
            self._queue_publish(pipe, events)
            pipe.execute()

        self._call("publish", send)

    def _queue_publish(self, pipe, events: list[BusEvent]) -> int:
        """Queue the batch's PUBLISH on `pipe`; on a cluster an SPUBLISH per shard the events are
        of, each on its shard's channel. The number of commands queued."""
        if not self._cluster:
            pipe.publish(self._channel, encode_events(events))
            return 1
        by_channel: dict[int, list[BusEvent]] = {}
        for event in events:
            by_channel.setdefault(self._layout.channel_of(event.order_id), []).append(event)
        for channel, batch in by_channel.items():
            pipe.spublish(self._layout.event_channels[channel], encode_events(batch))
        return len(by_channel)

    def subscribe(self, handler: EventBatchHandler) -> Subscription:
        """Subscribe now (BusError if Redis is down), then deliver from a daemon thread (on a
        cluster, a thread per shard's channel)."""
        if not self._cluster:
            return self._subscribe(self._channel, handler, decode_events)
        parts = []
        try:
            for channel in self._layout.event_channels:
                parts.append(self._subscribe(channel, handler, decode_events))
        except BusError:
            for part in parts:
                part.close()
            raise
        return Subscriptions(parts)

    # ---- control -------------------------------------------------------------------------
    def publish_control(self, message: dict) -> None:
        """PUBLISH the message as JSON on the control channel."""
        if not isinstance(message, dict):
            raise BusError("a control message is a JSON object")
        payload = codec.dumps(message)
        send = self._client.spublish if self._cluster else self._client.publish
        self._call("publish_control", lambda: send(self._control_channel, payload))

    def subscribe_control(self, handler: ControlHandler) -> Subscription:
        """Subscribe now to the control channel (BusError if Redis is down), then deliver from a
        daemon thread."""
        return self._subscribe(self._control_channel, handler, _decode_control)

    def _subscribe(self, channel: str, handler, decode) -> Subscription:
        self._check_open()
        if self._cluster:
            def reopen():
                return open_sharded(self._client, self._node_client, channel)
        else:
            def reopen():
                return open_pubsub(self._pubsub_client, channel)
        try:
            pubsub = reopen()
        except REDIS_ERRORS as exc:
            raise BusError(f"redis unavailable for subscribe: {exc}") from exc
        subscription = RedisSubscription(reopen, channel, pubsub, handler, on_close=self._forget, decode=decode)
        with self._lock:
            self._subscriptions.add(subscription)
        subscription.start()
        return subscription

    def _node_client(self, host: str, port: int) -> redis.Redis:
        """The subscriber client of one cluster node (kept: see `open_sharded`)."""
        with self._lock:
            client = self._node_clients.get((host, port))
            if client is None:
                scheme, rest = self._url.split("://", 1)
                userinfo = rest.split("@", 1)[0] + "@" if "@" in rest.split("/", 1)[0] else ""
                client = redis.Redis.from_url(f"{scheme}://{userinfo}{host}:{port}", **self._pubsub_options)
                self._node_clients[(host, port)] = client
            return client

    def _forget(self, subscription: RedisSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    # ---- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        """PING Redis; BusError if it does not answer."""
        self._call("ping", self._client.ping)

    def close(self) -> None:
        """Stop subscription threads and close the connection pools (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        self._client.close()
        if self._pubsub_client is not None:
            self._pubsub_client.close()
        with self._lock:
            node_clients, self._node_clients = list(self._node_clients.values()), {}
        for client in node_clients:
            client.close()
