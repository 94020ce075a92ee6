"""The Redis database indexes the suite and the bench lease: a holder that flushes its own
index (as the tests of a Redis restart without persistence do) keeps it leased, so no concurrent
test is handed the same index and its workers take the other test's jobs."""
from __future__ import annotations

import redis

from bench.cluster import leased_redis


def test_an_index_flushed_by_its_holder_is_not_leased_again_until_released(redis_url):
    base, index = redis_url.rsplit("/", 1)
    redis.Redis.from_url(redis_url).flushdb()
    with leased_redis(first_index=int(index), base_url=base, seconds=30) as other:
        assert other != redis_url
        redis.Redis.from_url(other).set("mine", "1")
    with leased_redis(first_index=int(other.rsplit("/", 1)[1]), base_url=base, seconds=30) as again:
        assert again == other  # released: free again, and flushed
        assert redis.Redis.from_url(again).get("mine") is None
