"""The Redis bus: production transport between web processes and workers.

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
  a whole batch of the web's submits in one script call.
- Events: one PUBLISH per batch on `{prefix}:{db}:events` (`storage.bus.encode_events`);
  best effort. Control messages (halts changed) on `{prefix}:{db}:control`, the same way.
- A web process's intake queues a batch of orders, publishes their `pending` events and
  reads the queue depth in one pipeline (`accept`).
"""
from __future__ import annotations

import logging
import threading
import uuid

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from storage.bus import (Accepted, Bus, ControlHandler, EventBatchHandler, Job, QueueStats, Subscription,
                         decode_events, encode_events)
from storage.bus_redis_pubsub import RedisSubscription, open_pubsub
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
MAX_STARTS_PER_CALL = 1000  # Lua's unpack takes a few thousand arguments at most

# Delete a lock only if the caller still holds it. KEYS: lock. ARGV: owner.
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _group_missing(exc: redis.ResponseError) -> bool:
    # XINFO on a deleted stream says "no such key"; the other commands say NOGROUP.
    message = str(exc)
    return "NOGROUP" in message or "no such key" in message


class RedisBus(Bus):
    """The bus on one Redis server; every method may raise BusError."""

    def __init__(self, url: str, prefix: str = "engine", *, socket_timeout: float = 10.0,
                 connect_timeout: float = 2.0):
        self._jobs = f"{prefix}:jobs"
        self._starts = f"{prefix}:starts"
        self._submits_prefix = f"{prefix}:submits:"
        # Pub/sub channels are server-wide, not per database index: name the index so
        # deployments (and test runs) on different indexes of one server stay apart.
        db_index = redis.connection.parse_url(url).get("db", 0)
        self._channel = f"{prefix}:{db_index}:events"
        self._control_channel = f"{prefix}:{db_index}:control"
        self._consumer_prefix = f"{prefix}:consumer:"
        self._epoch_key = f"{prefix}:epoch"
        # A blocking XREADGROUP must come back before the socket times out.
        self._max_block_ms = int((socket_timeout - 1.0) * 1000)
        options = dict(socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                       health_check_interval=15, decode_responses=True)
        # Retry briefly (a pooled socket may be stale after a Redis restart), then let
        # BusError reach the caller instead of redis-py's default ~10 retries.
        self._client = redis.Redis.from_url(
            url, retry=Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.01), 2), **options)
        # Subscriptions do their own reconnecting (with backoff, logged), so their
        # client must surface a dropped connection instead of hiding it. Messages stay
        # bytes: each event's JSON goes to listeners as it came.
        # Named, so an operator (or a test) can find these connections in CLIENT LIST.
        self._pubsub_client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0),
                                                   client_name=f"{prefix}-subscriber",
                                                   **{**options, "decode_responses": False})
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
            except redis.RedisError as exc:
                raise BusError(f"redis unavailable for {action}: {exc}") from exc

    def _create_group(self) -> None:
        try:
            # Id 0: jobs added before the group existed (e.g. right after a restart) count.
            self._client.xgroup_create(self._jobs, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _heartbeat_key(self, consumer: str) -> str:
        return self._consumer_prefix + consumer

    # ---- jobs ----------------------------------------------------------------------------
    def enqueue(self, order_id: str) -> str:
        """XADD the order to the jobs stream; the entry id is the job id."""
        return self._call("enqueue", lambda: self._client.xadd(self._jobs, {"order_id": order_id}))

    def accept(self, order_ids: list[str], events: list[BusEvent]) -> Accepted:
        """XADD each order, PUBLISH the events and read the queue's stats (depth, oldest
        waiting job's age), in one pipeline.

        A consumer group lost with Redis's data (NOGROUP from the stats, after the XADDs went
        through) is created again afterwards, and the depth is then the jobs just added.
        (redis-py may send the pipeline again after a connection error: a job added twice
        runs its order once, the first job to claim it binds it.)
        """
        def run() -> Accepted:
            pipe = self._client.pipeline(transaction=False)
            for order_id in order_ids:
                pipe.xadd(self._jobs, {"order_id": order_id})
            if events:
                pipe.publish(self._channel, encode_events(events))
            self._queue_stats_script(keys=[self._jobs], args=[GROUP], client=pipe)
            replies = pipe.execute(raise_on_error=False)
            failed = next((r for r in replies[:-1] if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
            stats = replies[-1]
            if isinstance(stats, redis.ResponseError) and _group_missing(stats):
                self._group_ready = False
                self._create_group()
                return Accepted(replies[:len(order_ids)], len(order_ids))
            if isinstance(stats, Exception):
                raise stats
            depth, age_ms = stats
            return Accepted(replies[:len(order_ids)], int(depth), int(age_ms) / 1000.0)

        return self._call("accept", run)

    def queue_depth(self) -> int:
        """Entries in the stream minus those delivered and not yet acknowledged."""
        def depth() -> int:
            pipe = self._client.pipeline(transaction=True)
            pipe.xlen(self._jobs)
            pipe.xpending(self._jobs, GROUP)
            length, summary = pipe.execute()
            return max(length - summary["pending"], 0)

        return self._call("queue_depth", depth, needs_group=True)

    def queue_stats(self) -> QueueStats:
        """The depth as `queue_depth` counts it and the oldest waiting job's age (one script call)."""
        depth, age_ms = self._call("queue_stats", lambda: self._queue_stats_script(keys=[self._jobs], args=[GROUP]),
                                   needs_group=True)
        return QueueStats(int(depth), int(age_ms) / 1000.0)

    def fetch(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        """XREADGROUP new entries; waits at most `block_ms` (capped below the socket timeout)."""
        # BLOCK 0 would mean "forever" to Redis; 0 here means "do not wait".
        block = min(block_ms, self._max_block_ms) if block_ms > 0 else None

        def read() -> list[Job]:
            try:
                reply = self._client.xreadgroup(GROUP, consumer, {self._jobs: ">"}, count=count, block=block)
            except redis.ResponseError as exc:
                if "UNBLOCKED" not in str(exc):
                    raise
                # The stream vanished under a blocked read (Redis flushed or restarted):
                # nothing to hand out; the next call recreates the group.
                self._group_ready = False
                return []
            return [Job(job_id, fields["order_id"]) for _, entries in reply or [] for job_id, fields in entries]

        return self._call("fetch", read, needs_group=True)

    def ack(self, *jobs: Job) -> None:
        """XACK and XDEL together, so the stream keeps only unfinished jobs."""
        if not jobs:
            return
        ids = [job.job_id for job in jobs]

        def forget() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.xack(self._jobs, GROUP, *ids)
            pipe.xdel(self._jobs, *ids)
            pipe.execute()

        self._call("ack", forget, needs_group=True)

    def heartbeat(self, consumer: str, ttl_s: float) -> None:
        """SET the consumer's liveness key with a TTL of `ttl_s`."""
        ttl_ms = max(int(ttl_s * 1000), 1)
        self._call("heartbeat", lambda: self._client.set(self._heartbeat_key(consumer), "1", px=ttl_ms))

    def retire(self, consumer: str) -> None:
        """DEL the consumer's liveness key: it counts as dead at once."""
        self._call("retire", lambda: self._client.delete(self._heartbeat_key(consumer)))

    def queued_order_ids(self) -> set[str]:
        """The order of every entry in the jobs stream (it holds only waiting and pending jobs)."""
        def scan() -> set[str]:
            found, start = set(), "-"
            while True:
                entries = self._client.xrange(self._jobs, min=start, count=1000)
                found.update(fields.get("order_id") for _, fields in entries)
                if len(entries) < 1000:
                    return found
                start = "(" + entries[-1][0]  # exclusive: after the last one read

        return self._call("queued_order_ids", scan)

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
            keys = self._client.scan_iter(match=self._consumer_prefix + "*", count=500)
            return {key[len(self._consumer_prefix):] for key in keys}
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
            jobs: list[Job] = []
            for member in self._client.xinfo_consumers(self._jobs, GROUP):
                name = member["name"]
                if len(jobs) >= count:
                    break
                if name == consumer or (member["pending"] == 0 and member["idle"] < _IDLE_CONSUMER_MS):
                    continue
                claimed = self._claim_script(
                    keys=[self._jobs, self._heartbeat_key(name)],
                    args=[GROUP, name, consumer, count - len(jobs)])
                for entry in claimed:
                    if entry:  # entries deleted meanwhile come back empty on older Redis
                        job_id, flat = entry
                        fields = dict(zip(flat[::2], flat[1::2]))
                        jobs.append(Job(job_id, fields["order_id"]))
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

    def try_submit(self, owners: list[str], limit: int, window_s: float) -> list[float]:
        """Count a batch of submissions in the owners' shared windows (one script call)."""
        if not owners:
            return []
        keys = [self._submits_prefix + owner for owner in owners]
        member = uuid.uuid4().hex
        waits = self._call("try_submit", lambda: self._try_submit_script(
            keys=keys, args=[limit, float(window_s), member]))
        return [float(wait) for wait in waits]

    # ---- events --------------------------------------------------------------------------
    def publish(self, events: list[BusEvent]) -> None:
        """PUBLISH the batch as one message."""
        payload = encode_events(events)
        self._call("publish", lambda: self._client.publish(self._channel, payload))

    def subscribe(self, handler: EventBatchHandler) -> Subscription:
        """Subscribe now (BusError if Redis is down), then deliver from a daemon thread."""
        return self._subscribe(self._channel, handler, decode_events)

    # ---- control -------------------------------------------------------------------------
    def publish_control(self, message: bytes) -> None:
        """PUBLISH the message on the control channel."""
        self._call("publish_control", lambda: self._client.publish(self._control_channel, message))

    def subscribe_control(self, handler: ControlHandler) -> Subscription:
        """Subscribe to the control channel now (BusError if Redis is down); deliver from a thread."""
        return self._subscribe(self._control_channel, handler, bytes)

    def _subscribe(self, channel: str, handler, decode) -> Subscription:
        self._check_open()
        try:
            pubsub = open_pubsub(self._pubsub_client, channel)
        except redis.RedisError as exc:
            raise BusError(f"redis unavailable for subscribe: {exc}") from exc
        subscription = RedisSubscription(self._pubsub_client, channel, pubsub, handler,
                                         on_close=self._forget, decode=decode)
        with self._lock:
            self._subscriptions.add(subscription)
        subscription.start()
        return subscription

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
        self._pubsub_client.close()
