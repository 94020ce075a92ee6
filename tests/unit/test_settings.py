"""Settings from the environment: defaults, and a clear error naming a bad variable."""
import pytest

from config import ConfigError, load_settings


def test_defaults_are_the_specs():
    s = load_settings({}, dotenv=None)
    assert (s.port, s.worker_concurrency, s.order_rate_limit, s.queue_max_depth, s.retry_attempts) == (8000, 10, 100, 10000, 3)
    assert s.venue_profile == "realistic" and s.venue_failure_rate == 0.05
    assert s.embedded and s.api_keys == ()
    assert (s.log_level, s.log_format) == ("INFO", "text")


def test_log_format_json_is_read_in_any_case():
    assert load_settings({"LOG_FORMAT": " JSON "}, dotenv=None).log_format == "json"


@pytest.mark.parametrize("name,value", [
    ("PORT", "eighty"), ("PORT", "70000"), ("WORKER_CONCURRENCY", "0"), ("RETRY_ATTEMPTS", "-1"),
    ("VENUE_PROFILE", "fast"), ("VENUE_FAILURE_RATE", "1.5"), ("VENUE_FAILURE_RATE", "nan"),
    ("DATABASE_URL", "mysql://x/y"), ("REDIS_URL", "http://localhost"), ("SIM_SEED", "abc"),
    ("QUEUE_MAX_DEPTH", "1e3"), ("LOG_LEVEL", "LOUD"), ("LOG_FORMAT", "logfmt"),
    ("HEARTBEAT_TTL_SECONDS", "ten"), ("HEARTBEAT_TTL_SECONDS", "0"), ("HEARTBEAT_TTL_SECONDS", "0.1"),
    ("HEARTBEAT_TTL_SECONDS", "nan"), ("CLAIM_INTERVAL_SECONDS", "-1"), ("CLAIM_INTERVAL_SECONDS", "inf"),
    ("RECONCILE_EVERY_SECONDS", "0"), ("RECONCILE_EVERY_SECONDS", "10s"), ("RECONCILE_MIN_AGE_SECONDS", "-5"),
    ("TRIGGER_TICK_MS", "0"), ("TRIGGER_TICK_MS", "0.5"), ("TRIGGER_REFRESH_SECONDS", "0"),
    ("VENUE_LATENCY_SCALE", "-0.1"), ("VENUE_LATENCY_SCALE", "fast"), ("VENUE_LATENCY_SCALE", "1000"),
    ("RETRY_MAX_DELAY_SECONDS", "0"), ("RETRY_MAX_DELAY_SECONDS", "5 s"),
    ("RISK_MAX_ORDER_USD", "-1"), ("RISK_MAX_ORDER_USD", "ten"), ("RISK_MAX_ORDER_USD", "nan"),
    ("RISK_MAX_ORDER_USD", "0.0000001"), ("RISK_MAX_NOTIONAL_24H_USD", "1e13"), ("RISK_MAX_OPEN_ORDERS", "-1"),
    ("RISK_MAX_OPEN_ORDERS", "2.5"),
])
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value}, dotenv=None)


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    a, b = "a" * 32, "b" * 40
    env_file.write_text(f"# comment\nPORT=9001\nexport WORKER_CONCURRENCY='7'\nAPI_KEYS={a}, {b}\n")
    s = load_settings({"PORT": "9002"}, dotenv=env_file)
    assert (s.port, s.worker_concurrency, s.api_keys) == (9002, 7, (a, b))


def test_a_key_shorter_than_32_characters_stops_the_start_naming_the_variable_never_the_key():
    short = "s3cret-but-short"
    with pytest.raises(ConfigError, match="API_KEYS") as refused:
        load_settings({"API_KEYS": f"{'k' * 32},{short}"}, dotenv=None)
    assert "key 2 has 16" in str(refused.value) and short not in str(refused.value)


def test_postgres_and_redis_urls_are_accepted():
    s = load_settings({"DATABASE_URL": "postgres://u:p@db:5432/x", "REDIS_URL": "rediss://r:6380/1"}, dotenv=None)
    assert not s.embedded


def test_a_redis_cluster_url_gets_six_bus_shards_unless_told_and_only_database_0():
    assert load_settings({"REDIS_URL": "redis://r:6379/0"}, dotenv=None).bus_shards == 1
    cluster = load_settings({"REDIS_URL": "redis+cluster://r:7000"}, dotenv=None)
    assert (cluster.redis_url, cluster.bus_shards) == ("redis+cluster://r:7000", 6)
    assert load_settings({"REDIS_URL": "rediss+cluster://r:7000/0", "BUS_SHARDS": "12"}, dotenv=None).bus_shards == 12
    with pytest.raises(ConfigError, match="only database 0"):
        load_settings({"REDIS_URL": "redis+cluster://r:7000/3"}, dotenv=None)
    with pytest.raises(ConfigError, match="BUS_SHARDS"):
        load_settings({"REDIS_URL": "redis://r:6379/0", "BUS_SHARDS": "0"}, dotenv=None)


def test_the_intervals_default_to_production_values():
    s = load_settings({}, dotenv=None)
    assert (s.heartbeat_ttl_s, s.heartbeat_every_s, s.claim_interval_s) == (10.0, 1.0, 5.0)
    assert (s.reconcile_every_s, s.reconcile_min_age_s) == (10.0, 10.0)
    assert (s.trigger_tick_ms, s.trigger_refresh_s, s.venue_latency_scale, s.retry_max_delay_s) == (50, 5.0, 1.0, 5.0)


def test_the_intervals_take_sub_second_values_and_the_heartbeat_beats_ten_times_per_ttl():
    s = load_settings({"HEARTBEAT_TTL_SECONDS": "2", "CLAIM_INTERVAL_SECONDS": "0.5", "RECONCILE_EVERY_SECONDS": "1.5",
                       "RECONCILE_MIN_AGE_SECONDS": " 0.5 ", "TRIGGER_TICK_MS": "20", "TRIGGER_REFRESH_SECONDS": "0.3",
                       "VENUE_LATENCY_SCALE": "0.2", "RETRY_MAX_DELAY_SECONDS": "0.8"}, dotenv=None)
    assert (s.heartbeat_ttl_s, s.heartbeat_every_s, s.claim_interval_s) == (2.0, 0.2, 0.5)
    assert (s.reconcile_every_s, s.reconcile_min_age_s) == (1.5, 0.5)
    assert (s.trigger_tick_ms, s.trigger_refresh_s, s.venue_latency_scale, s.retry_max_delay_s) == (20, 0.3, 0.2, 0.8)
    assert load_settings({"VENUE_LATENCY_SCALE": "0"}, dotenv=None).venue_latency_scale == 0.0


def test_every_variable_read_is_documented_and_in_env_example():
    from pathlib import Path

    from config.settings import VARIABLES

    example = (Path(__file__).parents[2] / ".env.example").read_text(encoding="utf-8")
    for name in ("HEARTBEAT_TTL_SECONDS", "CLAIM_INTERVAL_SECONDS", "RECONCILE_EVERY_SECONDS",
                 "RECONCILE_MIN_AGE_SECONDS", "TRIGGER_TICK_MS", "TRIGGER_REFRESH_SECONDS", "VENUE_LATENCY_SCALE",
                 "RETRY_MAX_DELAY_SECONDS", "QUOTE_STREAM_INTERVAL_MS", "QUOTE_STREAM_REFRESH_MS",
                 "WEBHOOK_SECRET", "WEBHOOK_ALLOW_PRIVATE", "WEBHOOK_RETRY_SECONDS",
                 "WEBHOOK_TIMEOUT_SECONDS", "WEBHOOK_CONCURRENCY", "WEBHOOK_POLL_SECONDS", "WEBHOOK_BACKOFF_MAX_SECONDS"):
        assert name in VARIABLES and f"# {name}=" in example, name


@pytest.mark.parametrize("scale", ["1", "0.2", "0"])
def test_venue_latency_scale_keeps_the_realistic_shape_at_its_scale(scale):
    import random
    from types import SimpleNamespace

    from storage.venues.sim.venue import SimVenue

    def venue(profile):
        world = SimpleNamespace(settings=load_settings({"VENUE_PROFILE": profile, "VENUE_LATENCY_SCALE": scale},
                                                       dotenv=None))
        return SimVenue("raydium", world, ledger=None, rng=random.Random(7))

    realistic, factor = venue("realistic"), float(scale)
    quotes = [realistic.quote_latency() for _ in range(200)]
    swaps = [realistic.swap_latency() for _ in range(200)]
    assert all(0.15 * factor <= q <= 0.25 * factor for q in quotes)
    assert all(2.0 * factor <= s <= 3.0 * factor for s in swaps)
    assert factor == 0 or (max(swaps) - min(swaps) > 0.5 * factor)  # still drawn over the range, not fixed
    instant = venue("instant")
    assert instant.quote_latency() == instant.swap_latency() == 0.0


def test_a_key_id_secret_shorter_than_32_characters_is_refused_naming_it():
    with pytest.raises(ConfigError, match="KEY_ID_SECRET"):
        load_settings({"KEY_ID_SECRET": "too-short"}, dotenv=None)
    assert load_settings({"KEY_ID_SECRET": "k" * 32}, dotenv=None).key_id_secret == "k" * 32


def test_the_per_caller_rate_limits_default_to_bounded_values_and_zero_turns_one_off():
    s = load_settings({}, dotenv=None)
    assert (s.quote_rate_limit, s.list_rate_limit, s.subscribe_rate_limit, s.connect_rate_limit) == (600, 600, 1200, 6000)
    assert (s.trusted_proxy_hops, s.rate_window_s) == (0, 60.0)
    s = load_settings({"QUOTE_RATE_LIMIT": "0", "LIST_RATE_LIMIT": "5", "SUBSCRIBE_RATE_LIMIT": " 7 ",
                       "CONNECT_RATE_LIMIT": "0", "TRUSTED_PROXY_HOPS": "2", "RATE_WINDOW_SECONDS": "1.5"}, dotenv=None)
    assert (s.quote_rate_limit, s.list_rate_limit, s.subscribe_rate_limit, s.connect_rate_limit) == (0, 5, 7, 0)
    assert (s.trusted_proxy_hops, s.rate_window_s) == (2, 1.5)


@pytest.mark.parametrize("name,value", [
    ("QUOTE_RATE_LIMIT", "-1"), ("QUOTE_RATE_LIMIT", "lots"), ("LIST_RATE_LIMIT", "1.5"),
    ("SUBSCRIBE_RATE_LIMIT", "-3"), ("CONNECT_RATE_LIMIT", "1e4"), ("TRUSTED_PROXY_HOPS", "-1"),
    ("TRUSTED_PROXY_HOPS", "11"), ("RATE_WINDOW_SECONDS", "0"), ("RATE_WINDOW_SECONDS", "nan"),
])
def test_a_bad_rate_limit_setting_names_its_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value}, dotenv=None)


def test_the_rate_limit_variables_are_documented_and_in_env_example():
    from pathlib import Path

    from config.settings import VARIABLES

    example = (Path(__file__).parents[2] / ".env.example").read_text(encoding="utf-8")
    for name in ("QUOTE_RATE_LIMIT", "LIST_RATE_LIMIT", "SUBSCRIBE_RATE_LIMIT", "CONNECT_RATE_LIMIT",
                 "TRUSTED_PROXY_HOPS", "RATE_WINDOW_SECONDS"):
        assert name in VARIABLES and f"# {name}=" in example, name
def test_risk_limits_default_to_none_and_read_usd_amounts_exactly():
    defaults = load_settings({}, dotenv=None)
    assert (defaults.risk_max_order_usd, defaults.risk_max_open_orders, defaults.risk_max_notional_24h_usd) == (0, 0, 0)
    settings = load_settings({"RISK_MAX_ORDER_USD": "1000.50", "RISK_MAX_OPEN_ORDERS": "5",
                              "RISK_MAX_NOTIONAL_24H_USD": "250000"}, dotenv=None)
    assert str(settings.risk_max_order_usd) == "1000.50" and settings.risk_max_open_orders == 5
    assert settings.risk_max_notional_24h_usd == 250000
