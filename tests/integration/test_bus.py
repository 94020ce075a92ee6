"""The bus contract, run on the in-process bus and on Redis alike; Redis failure modes last."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from storage.bus import QueueStats
from storage.bus_redis import RedisBus
from storage.errors import BusError
from storage.records import BusEvent

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0


@pytest.fixture
def bus(open_bus):
    return open_bus()


class Collector:
    """An event handler that records batches and lets a test wait for a count of them."""

    def __init__(self, fail_first: bool = False):
        self.batches: list[list[dict]] = []
        self.threads: set[threading.Thread] = set()
        self._cond = threading.Condition()
        self._fail_first = fail_first

    def __call__(self, batch):
        with self._cond:
            self.batches.append(batch)
            self.threads.add(threading.current_thread())
            self._cond.notify_all()
        if self._fail_first and len(self.batches) == 1:
            raise RuntimeError("a broken subscriber")

    def wait_for(self, predicate, timeout: float = DEADLINE_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.batches), timeout)


def ev(seq: int, status: str = "pending", order_id: str = "order-1", owner: str = "") -> BusEvent:
    """A published event as the writer makes it (its JSON text encoded once)."""
    text = b'{"orderId":"%s","seq":%d,"status":"%s"}' % (order_id.encode(), seq, status.encode())
    return BusEvent(order_id, seq, status, owner, text)


def eventually(probe, timeout: float = DEADLINE_S, pause: float = 0.02):
    """Call `probe()` until it returns something truthy or the deadline passes; return the last value."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value and time.monotonic() < deadline:
        threading.Event().wait(pause)
        value = probe()
    return value


# ---- jobs -------------------------------------------------------------------------------

def sharded(bus) -> bool:
    """Whether the bus spreads jobs over several streams (oldest first then holds per stream)."""
    return getattr(bus, "shards", 1) > 1


def test_jobs_are_fetched_oldest_first(bus):
    for order_id in ("a", "b", "c"):
        bus.enqueue(order_id)
    first = bus.fetch("w1", count=2, block_ms=0)
    second = bus.fetch("w2", count=2, block_ms=0)
    if sharded(bus):
        assert len(first) == 2 and sorted(job.order_id for job in first + second) == ["a", "b", "c"]
    else:
        assert [job.order_id for job in first] == ["a", "b"]
        assert [job.order_id for job in second] == ["c"]
    assert bus.fetch("w1", count=2, block_ms=0) == []


def test_fetch_waits_for_a_job_and_returns_when_one_arrives(bus):
    done = threading.Event()
    result = {}

    def fetcher():
        started = time.monotonic()
        result["jobs"] = bus.fetch("w1", count=1, block_ms=4000)
        result["elapsed"] = time.monotonic() - started
        done.set()

    threading.Thread(target=fetcher, daemon=True).start()
    assert not done.wait(0.2), "fetch returned before any job was queued"
    bus.enqueue("late")
    assert done.wait(DEADLINE_S)
    assert [job.order_id for job in result["jobs"]] == ["late"]
    assert result["elapsed"] < 3.5, "fetch waited out its block time instead of waking up"


def test_fetch_gives_up_empty_after_its_block_time(bus):
    started = time.monotonic()
    assert bus.fetch("w1", count=5, block_ms=100) == []
    assert time.monotonic() - started < 2.0


def test_ack_forgets_a_job_and_queue_depth_counts_only_waiting_jobs(bus):
    for order_id in ("a", "b", "c"):
        bus.enqueue(order_id)
    assert bus.queue_depth() == 3
    held = bus.fetch("w1", count=2, block_ms=0)
    assert bus.queue_depth() == 1
    bus.ack(held[0])
    bus.ack(held[0])  # acknowledging twice is harmless
    assert bus.queue_depth() == 1
    claimed = bus.claim_abandoned("w2", count=10)  # w1 never heart-beat: it counts as dead
    assert [job.order_id for job in claimed] == ["b"]
    assert [job.order_id for job in bus.fetch("w2", count=5, block_ms=0)] == ["c"]
    assert bus.queue_depth() == 0


def test_queue_stats_give_the_depth_and_the_age_of_the_oldest_waiting_job(bus):
    assert bus.queue_stats() == QueueStats(0, 0.0)
    started = time.monotonic()
    bus.enqueue("a")
    assert eventually(lambda: bus.queue_stats().oldest_age_s >= 0.3)
    bus.enqueue("b")
    first = bus.queue_stats()
    assert first.depth == 2 and 0.3 <= first.oldest_age_s <= time.monotonic() - started + 0.01
    bus.heartbeat("w1", ttl_s=30)
    bus.fetch("w1", count=1, block_ms=0)  # "a" starts: "b", queued 0.3 s later, is the oldest now
    second = bus.queue_stats()
    assert second.depth == 1 and second.oldest_age_s < first.oldest_age_s
    bus.fetch("w1", count=1, block_ms=0)
    assert bus.queue_stats() == QueueStats(0, 0.0)  # held jobs are not waiting


def test_several_jobs_are_acknowledged_at_once(bus):
    for order_id in ("a", "b", "c"):
        bus.enqueue(order_id)
    bus.heartbeat("w", ttl_s=30)
    jobs = bus.fetch("w", count=3, block_ms=0)
    bus.ack(*jobs[:2])
    bus.heartbeat("w", ttl_s=0.05)
    bus.heartbeat("rescuer", ttl_s=30)
    claimed = eventually(lambda: bus.claim_abandoned("rescuer", count=10))
    assert [job.order_id for job in claimed] == ["c"]


def test_claim_takes_the_jobs_of_a_consumer_whose_heartbeat_expired(bus):
    for order_id in ("a", "b"):
        bus.enqueue(order_id)
    bus.heartbeat("dying", ttl_s=0.05)
    held = bus.fetch("dying", count=2, block_ms=0)
    bus.heartbeat("rescuer", ttl_s=30)

    # On a cluster each shard keeps its own copy of the heartbeat, and the masters expire them
    # a moment apart: a claim may take one shard's jobs before the other's.
    claimed = []
    eventually(lambda: claimed.extend(bus.claim_abandoned("rescuer", count=10)) or len(claimed) >= 2)

    assert sorted(job.order_id for job in claimed) == ["a", "b"]
    assert {job.job_id for job in claimed} == {job.job_id for job in held}
    assert bus.claim_abandoned("other", count=10) == []  # the rescuer is alive
    for job in claimed:
        bus.ack(job)
    assert bus.queue_depth() == 0
    assert bus.claim_abandoned("other", count=10) == []


def test_claim_never_takes_the_jobs_of_a_live_consumer(bus):
    for order_id in ("live-1", "live-2", "dead-1"):
        bus.enqueue(order_id)
    bus.heartbeat("live", ttl_s=30)
    bus.fetch("live", count=2, block_ms=0)
    bus.heartbeat("dead", ttl_s=0.05)
    held = bus.fetch("dead", count=1, block_ms=0)

    claimed = eventually(lambda: bus.claim_abandoned("rescuer", count=10))

    assert len(held) == 1 and claimed == held
    assert bus.claim_abandoned("rescuer", count=10) == []


def test_claim_takes_no_more_than_count(bus):
    for order_id in ("a", "b", "c"):
        bus.enqueue(order_id)
    bus.fetch("gone", count=3, block_ms=0)
    bus.heartbeat("w1", ttl_s=30)
    bus.heartbeat("w2", ttl_s=30)
    first, second = bus.claim_abandoned("w1", count=2), bus.claim_abandoned("w2", count=2)
    assert len(first) == 2 and sorted(job.order_id for job in first + second) == ["a", "b", "c"]


# ---- rate -------------------------------------------------------------------------------

def test_live_consumers_are_those_whose_heartbeat_has_not_expired(bus):
    bus.heartbeat("alive", ttl_s=30)
    bus.heartbeat("expiring", ttl_s=0.05)
    assert eventually(lambda: bus.live_consumers() == {"alive"})


@pytest.mark.one_slot
def test_the_epoch_is_created_once_and_then_read(open_bus):
    first, second = open_bus(), open_bus()
    epoch, created = first.ensure_epoch()
    assert created and epoch
    assert second.ensure_epoch() == (epoch, False)
    assert first.ensure_epoch() == (epoch, False)


@pytest.mark.one_slot
def test_try_start_enforces_the_limit_across_two_buses(open_bus):
    buses = [open_bus(), open_bus()]
    results: list[float] = []
    lock = threading.Lock()

    def starter(bus):
        for _ in range(5):
            allowed, wait = bus.try_start(limit=3, window_s=30)
            with lock:
                results.append(0.0 if allowed else wait)

    threads = [threading.Thread(target=starter, args=(b,)) for b in buses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert len(results) == 10
    assert results.count(0.0) == 3
    assert all(0 < wait <= 30 for wait in results if wait != 0.0)


@pytest.mark.one_slot
def test_try_start_allows_again_once_the_oldest_start_leaves_the_window(bus):
    assert bus.try_start(limit=1, window_s=0.3) == (1, 0.0)
    allowed, wait = bus.try_start(limit=1, window_s=0.3)
    assert allowed == 0 and 0 < wait <= 0.3
    assert eventually(lambda: bus.try_start(limit=1, window_s=0.3) == (1, 0.0))


@pytest.mark.one_slot
def test_try_start_counts_a_whole_batch_at_once_up_to_the_limit(bus):
    assert bus.try_start(limit=5, window_s=30, count=3) == (3, 0.0)
    allowed, wait = bus.try_start(limit=5, window_s=30, count=4)
    assert allowed == 2 and 0 < wait <= 30
    allowed, wait = bus.try_start(limit=5, window_s=30, count=2)
    assert allowed == 0 and 0 < wait <= 30


def test_submissions_are_limited_per_owner_across_two_buses(open_bus):
    first, second = open_bus(), open_bus()
    assert first.try_submit(["a", "a"], limit=3, window_s=30) == [0.0, 0.0]
    waits = second.try_submit(["a", "b", "a"], limit=3, window_s=30)
    assert waits[:2] == [0.0, 0.0]  # the third of owner a, the first of owner b
    assert 0 < waits[2] <= 30  # a's fourth is refused, whichever bus counts it
    assert first.try_submit(["b", "b"], limit=3, window_s=30) == [0.0, 0.0]
    assert first.try_submit([], limit=3, window_s=30) == []


def test_each_kind_of_request_has_its_own_windows_per_owner(open_bus):
    first, second = open_bus(), open_bus()
    assert first.try_submit(["a"], limit=1, window_s=30) == [0.0]  # submissions of a: full
    assert second.try_submit(["a", "a"], limit=1, window_s=30, kind="rate:quotes")[0] == 0.0
    assert 0 < first.try_submit(["a"], limit=1, window_s=30, kind="rate:quotes")[0] <= 30
    assert second.try_submit(["a"], limit=1, window_s=30, kind="rate:lists") == [0.0]
    assert 0 < second.try_submit(["a"], limit=1, window_s=30)[0] <= 30


@pytest.mark.one_slot
def test_a_refused_submission_is_not_counted_and_the_window_slides(bus):
    assert bus.try_submit(["a"], limit=1, window_s=2) == [0.0]
    for _ in range(5):  # refusals do not push the owner's window further out
        (wait,) = bus.try_submit(["a"], limit=1, window_s=2)
        assert 0 < wait <= 2
    assert eventually(lambda: bus.try_submit(["a"], limit=1, window_s=2) == [0.0])


def test_accept_queues_the_orders_publishes_their_events_and_reads_the_depth(bus):
    collector = Collector()
    bus.subscribe(collector)
    events = [ev(1, order_id="a"), ev(1, order_id="b")]
    accepted = bus.accept(["a", "b"], events)
    assert len(accepted.job_ids) == 2 and accepted.queue_depth == 2
    assert sorted(job.order_id for job in bus.fetch("w", 10, 0)) == ["a", "b"]
    # One message a batch (on a cluster, one a shard: a and b may be on two)
    assert collector.wait_for(lambda got: sum(map(len, got)) == 2)
    assert sorted((e for batch in collector.batches for e in batch), key=lambda e: e.order_id) == events
    assert len(collector.batches) == 1 or sharded(bus)


def test_a_retired_consumer_is_dead_at_once_and_its_jobs_can_be_taken(bus):
    bus.enqueue("a")
    bus.heartbeat("leaving", 30)
    bus.fetch("leaving", 10, 0)
    bus.heartbeat("taker", 30)
    assert bus.claim_abandoned("taker", 10) == []
    bus.retire("leaving")
    assert "leaving" not in bus.live_consumers()
    assert [j.order_id for j in bus.claim_abandoned("taker", 10)] == ["a"]


def test_queued_order_ids_are_those_waiting_or_held(bus):
    for order_id in ("a", "b", "c"):
        bus.enqueue(order_id)
    (done,) = bus.fetch("w", 1, 0)
    bus.ack(done)
    (held,) = bus.fetch("w", 1, 0)  # held, not acknowledged
    (waiting,) = {"a", "b", "c"} - {done.order_id, held.order_id}
    assert bus.queued_order_ids() == {held.order_id, waiting}
    assert bus.waiting_order_ids() == {waiting}
    if not sharded(bus):
        assert (done.order_id, held.order_id) == ("a", "b")


@pytest.mark.one_slot
def test_a_lock_has_one_holder_until_it_is_released_or_expires(bus):
    assert bus.try_lock("job", "w1", 30)
    assert not bus.try_lock("job", "w2", 30)
    assert bus.try_lock("job", "w1", 30), "its holder may take it again"
    bus.unlock("job", "w2")  # not the holder: nothing happens
    assert not bus.try_lock("job", "w2", 30)
    bus.unlock("job", "w1")
    assert bus.try_lock("job", "w2", 0.2)
    assert eventually(lambda: bus.try_lock("job", "w3", 30))


# ---- events -----------------------------------------------------------------------------

def test_publish_reaches_every_subscriber_in_order_off_the_publishing_thread(bus):
    first, second = Collector(), Collector()
    bus.subscribe(first)
    bus.subscribe(second)
    sent = [[ev(n), ev(n + 1, "routing")] for n in range(20)]
    for batch in sent:
        bus.publish(batch)
    for collector in (first, second):
        assert collector.wait_for(lambda got: len(got) >= 20)
        assert collector.batches == sent
        assert threading.current_thread() not in collector.threads


def test_a_closed_subscription_gets_nothing_more(bus):
    closed, open_ = Collector(), Collector()
    subscription = bus.subscribe(closed)
    bus.subscribe(open_)
    bus.publish([ev(1)])
    assert closed.wait_for(lambda got: len(got) == 1)
    subscription.close()
    subscription.close()  # idempotent
    bus.publish([ev(2)])
    assert open_.wait_for(lambda got: len(got) == 2)
    assert closed.batches == [[ev(1)]]


@pytest.mark.one_slot
def test_a_failing_subscriber_keeps_receiving(bus):
    collector = Collector(fail_first=True)
    bus.subscribe(collector)
    bus.publish([ev(1)])
    bus.publish([ev(2)])
    assert collector.wait_for(lambda got: len(got) == 2)


# ---- control messages -------------------------------------------------------------------

def test_control_messages_reach_every_control_subscriber_of_every_bus_and_no_event_subscriber(open_bus):
    publisher, other = open_bus(), open_bus()
    here, there, events = Collector(), Collector(), Collector()
    publisher.subscribe_control(here)
    other.subscribe_control(there)
    other.subscribe(events)
    sent = [{"topic": "keys", "keyId": f"k{n}", "revoked": n % 2 == 0} for n in range(5)]
    for message in sent:
        publisher.publish_control(message)
    publisher.publish([ev(1)])
    assert events.wait_for(lambda got: len(got) == 1)
    for collector in (here, there):
        assert collector.wait_for(lambda got: len(got) >= 5)
        assert collector.batches == sent
        assert threading.current_thread() not in collector.threads
    assert events.batches == [[ev(1)]]
    with pytest.raises(BusError):
        publisher.publish_control(["not", "an", "object"])


def test_a_closed_control_subscription_gets_nothing_more_and_a_failing_one_keeps_receiving(bus):
    closed, failing = Collector(), Collector(fail_first=True)
    subscription = bus.subscribe_control(closed)
    bus.subscribe_control(failing)
    bus.publish_control({"topic": "keys", "n": 1})
    assert closed.wait_for(lambda got: len(got) == 1)
    subscription.close()
    bus.publish_control({"topic": "keys", "n": 2})
    assert failing.wait_for(lambda got: len(got) == 2)
    assert closed.batches == [{"topic": "keys", "n": 1}]


@pytest.mark.one_slot
def test_a_closed_bus_refuses_work_with_bus_error(bus):
    bus.ping()
    bus.close()
    bus.close()  # idempotent
    with pytest.raises(BusError):
        bus.ping()
    with pytest.raises(BusError):
        bus.enqueue("a")


# ---- Redis failure modes ----------------------------------------------------------------

def test_jobs_flow_again_after_redis_loses_its_data(redis_url):
    import redis

    bus = RedisBus(redis_url)
    admin = redis.Redis.from_url(redis_url)
    try:
        bus.enqueue("before")
        assert [job.order_id for job in bus.fetch("w1", 1, 0)] == ["before"]
        admin.flushdb()  # what a restart without persistence does to the stream and group
        bus.enqueue("after")
        assert bus.queue_depth() == 1 and bus.queue_stats().depth == 1
        jobs = bus.fetch("w1", 5, 100)
        assert [job.order_id for job in jobs] == ["after"]
        bus.ack(jobs[0])
        assert bus.queue_depth() == 0
        admin.flushdb()
        bus.ack(jobs[0])  # acknowledging into an emptied Redis is harmless
        assert bus.claim_abandoned("w2", 5) == []
    finally:
        bus.close()
        admin.close()


def test_a_new_epoch_shows_that_redis_lost_its_data(redis_url):
    bus = RedisBus(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        epoch, _ = bus.ensure_epoch()
        redis.Redis.from_url(redis_url).flushdb()
        new_epoch, created = bus.ensure_epoch()
        assert created and new_epoch != epoch
    finally:
        bus.close()


def test_a_fetch_blocked_while_redis_loses_its_data_returns_empty(redis_url):
    import redis

    bus = RedisBus(redis_url)
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    done = threading.Event()
    result = {}

    def fetcher():
        result["jobs"] = bus.fetch("w1", count=1, block_ms=4000)
        done.set()

    try:
        bus.ping()
        threading.Thread(target=fetcher, daemon=True).start()
        db = str(admin.connection_pool.connection_kwargs["db"])
        assert eventually(lambda: any(c["cmd"] == "xreadgroup" and "b" in c["flags"] and c["db"] == db
                                      for c in admin.client_list())), "the fetch never blocked"
        admin.flushdb()
        assert done.wait(DEADLINE_S)
        assert result["jobs"] == []
        bus.enqueue("after")
        assert [job.order_id for job in bus.fetch("w1", 1, 100)] == ["after"]
    finally:
        bus.close()
        admin.close()


def test_a_subscriber_keeps_receiving_after_its_connection_is_killed(redis_url, caplog):
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    bus = RedisBus(redis_url, prefix=prefix)
    admin = redis.Redis.from_url(redis_url)
    collector = Collector()
    try:
        bus.subscribe(collector)
        bus.publish([ev(0)])
        assert collector.wait_for(lambda got: len(got) == 1)
        # Kill only this bus's subscriber connection: the server may be shared.
        ours = [c for c in admin.client_list(_type="pubsub") if c["name"] == f"{prefix}-subscriber"]
        assert ours, "the subscriber connection is not visible in CLIENT LIST"
        for client in ours:
            admin.client_kill_filter(_id=client["id"])

        # Pub/sub drops what is published while the subscriber reconnects: keep publishing.
        deadline = time.monotonic() + 10
        received = False
        seq = 1
        while not received and time.monotonic() < deadline:
            bus.publish([ev(seq)])
            seq += 1
            received = collector.wait_for(lambda got: len(got) > 1, timeout=0.05)
        assert received, "no event arrived after the connection was killed"
        assert any("dropped" in record.getMessage() for record in caplog.records)
    finally:
        bus.close()
        admin.close()


def test_an_unreachable_redis_raises_bus_error():
    bus = RedisBus("redis://127.0.0.1:1/0", connect_timeout=0.5)
    try:
        for action in (bus.ping, lambda: bus.enqueue("a"), bus.queue_depth, bus.queue_stats,
                       lambda: bus.subscribe(lambda batch: None)):
            with pytest.raises(BusError):
                action()
    finally:
        bus.close()
