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
])
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value}, dotenv=None)


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nPORT=9001\nexport WORKER_CONCURRENCY='7'\nAPI_KEYS=a, b\n")
    s = load_settings({"PORT": "9002"}, dotenv=env_file)
    assert (s.port, s.worker_concurrency, s.api_keys) == (9002, 7, ("a", "b"))


def test_postgres_and_redis_urls_are_accepted():
    s = load_settings({"DATABASE_URL": "postgres://u:p@db:5432/x", "REDIS_URL": "rediss://r:6380/1"}, dotenv=None)
    assert not s.embedded
