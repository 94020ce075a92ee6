"""The retry policy: attempts, permanence, and backoff's full-jitter exponential delays."""
from actors.retry import RetryPolicy, seeded_jitter


def test_retries_transient_errors_until_the_last_attempt():
    policy = RetryPolicy(attempts=3)
    assert policy.should_retry(1, retriable=True)
    assert policy.should_retry(2, retriable=True)
    assert not policy.should_retry(3, retriable=True)


def test_an_error_that_cannot_succeed_is_never_retried():
    assert not RetryPolicy(attempts=5).should_retry(1, retriable=False)


def test_delays_without_jitter_grow_exponentially_up_to_the_cap():
    policy = RetryPolicy(base_delay=0.1, max_delay=0.5, jitter=lambda v: v)
    assert [policy.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_full_jitter_stays_between_zero_and_the_exponential_bound():
    policy = RetryPolicy(base_delay=0.1, max_delay=5.0, jitter=seeded_jitter(1))
    for attempt in range(1, 8):
        bound = min(5.0, 0.1 * 2 ** (attempt - 1))
        samples = [policy.delay(attempt) for _ in range(50)]
        assert all(0 <= s <= bound for s in samples)
        assert max(samples) > bound / 2  # jitter spreads across the range, not a constant


def test_seeded_jitter_is_deterministic():
    a = RetryPolicy(jitter=seeded_jitter(42))
    b = RetryPolicy(jitter=seeded_jitter(42))
    assert [a.delay(n) for n in (1, 2, 3)] == [b.delay(n) for n in (1, 2, 3)]
