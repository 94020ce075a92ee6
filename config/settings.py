"""Settings from environment variables (and a `.env` file), checked once at start-up."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse


class ConfigError(Exception):
    """A variable has a bad value; the message names it."""


VENUE_PROFILES = ("realistic", "instant")
MIN_KEY_LENGTH = 32  # the spec's floor for API keys
LOG_FORMATS = ("text", "json")
CLUSTER_SHARDS = 6  # BUS_SHARDS's default on a Redis Cluster: even over 1, 2, 3 or 6 masters


@dataclass(frozen=True)
class Settings:
    """Every knob of the engine; built by `load_settings`, passed down, never mutated."""

    port: int = 8000
    database_url: str | None = None
    data_dir: Path = Path("./var")
    redis_url: str | None = None
    bus_shards: int = 1  # job streams (and, on a Redis Cluster, event channels); 6 by default on a cluster
    worker_concurrency: int = 10
    order_rate_limit: int = 100
    queue_max_depth: int = 10000
    queue_max_wait_s: int = 10
    retry_attempts: int = 3
    market_max_wait_s: int = 30
    price_collar_bps: int = 1000
    venue_cool_down_s: int = 30
    venue_profile: str = "realistic"
    venue_failure_rate: float = 0.05
    venue_timeout_rate: float = 0.02
    sim_seed: int | None = None
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()  # operator keys: /api/admin/*, never trading
    sim_controls: bool = True  # /api/sim/* writes (launch); SIM_CONTROLS=off answers them 404
    key_id_secret: str = ""
    key_rate_limit: int = 600
    # Per key (per address without keys), in any rate window: 0 turns one off (web/rate_limits.py).
    quote_rate_limit: int = 600
    list_rate_limit: int = 600
    subscribe_rate_limit: int = 1200
    connect_rate_limit: int = 6000
    trusted_proxy_hops: int = 0  # proxies that append to X-Forwarded-For in front of the web
    # Pre-trade risk limits, the defaults of every owner (0: no limit; see storage/risk.py).
    risk_max_order_usd: Decimal = Decimal(0)
    risk_max_open_orders: int = 0
    risk_max_notional_24h_usd: Decimal = Decimal(0)
    cors_origins: tuple[str, ...] = ()
    # Webhooks (storage/webhooks.py, actors/webhook_dispatcher.py).
    webhook_secret: str = ""  # the master secret owners' signing secrets derive from ("": one in the database)
    webhook_allow_private: bool = False  # callbacks may reach loopback and private addresses (tests, intranets)
    webhook_retry_s: float = 86400.0  # a delivery is retried this long after its event, then given up
    webhook_timeout_s: float = 10.0  # one POST: connect and answer
    webhook_concurrency: int = 8  # POSTs in flight per worker
    log_level: str = "INFO"
    log_format: str = "text"
    # Intervals: production defaults; tests set them short (tests/e2e/conftest.py).
    heartbeat_ttl_s: float = 10.0  # a worker beats every tenth of it
    claim_interval_s: float = 5.0
    reconcile_every_s: float = 10.0  # the bus epoch is checked every fifth of it
    reconcile_min_age_s: float = 10.0
    trigger_tick_ms: int = 50
    batch_wait_ms: float = 8.0  # how long a batch of one may wait for company (storage/batching.py)
    trigger_refresh_s: float = 5.0
    quote_stream_interval_ms: int = 250  # streamed quotes: at most one frame per subscription this often
    quote_stream_refresh_ms: int = 1000  # ... and computed again this often without a pools notice (drift)
    halt_refresh_s: float = 5.0  # every process reloads the active halts this often (a missed broadcast)
    venue_latency_scale: float = 1.0
    retry_max_delay_s: float = 5.0  # the longest wait before a retry (full jitter below it)
    rate_window_s: float = 60.0  # the window of KEY_RATE_LIMIT and of the per-caller limits
    # Retention (storage/retention.py): 0 keeps every order; else finished orders leave the hot
    # tables for archives once their month ended more than this many days ago (at least 1).
    order_retention_days: int = 0
    archive_every_s: float = 3600.0  # how often a worker runs the archive job (one at a time)
    webhook_poll_s: float = 0.5  # how often a worker looks for deliveries due
    webhook_backoff_max_s: float = 300.0  # the longest wait between two tries of a delivery

    @property
    def heartbeat_every_s(self) -> float:
        """How often a worker renews its heartbeat: ten beats per TTL."""
        return self.heartbeat_ttl_s / 10

    @property
    def sqlite_path(self) -> Path:
        """Where the embedded default keeps its database."""
        return self.data_dir / "engine.sqlite3"

    @property
    def embedded(self) -> bool:
        """True when running on the embedded default (no Postgres, no Redis)."""
        return self.database_url is None and self.redis_url is None

    def with_(self, **changes) -> "Settings":
        """A copy with some fields changed (tests and `engine run`)."""
        return replace(self, **changes)


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file: KEY=VALUE lines, `#` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _int(env, name, default, low, high=None):
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def _rate(env, name, default):
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number between 0 and 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1, got {raw}")
    return value


def _float(env, name, default, low, high, unit=""):
    """A number between low and high (`unit` names it in the message); durations are floats
    so that tests may set sub-second ones."""
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    what = f"a number of {unit}" if unit else "a number"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan and inf
        raise ConfigError(f"{name} must be between {low:g} and {high:g}{' ' + unit if unit else ''}, got {raw}")
    return value


def _usd(env, name):
    """An amount of USD: 0 (no limit) or more, at most 6 decimals (micro-USD, what the risk
    figures count in) and below 10^12."""
    raw = env.get(name, "").strip()
    if raw == "":
        return Decimal(0)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be an amount of USD, got {raw!r}") from None
    if not value.is_finite() or value < 0 or value >= 10 ** 12:
        raise ConfigError(f"{name} must be between 0 and 10^12 USD, got {raw}")
    if value != value.quantize(Decimal("0.000001")):
        raise ConfigError(f"{name} must have at most 6 decimals, got {raw}")
    return value


def _seconds(env, name, default, low, high):
    return _float(env, name, default, low, high, "seconds")


def _url(env, name, schemes):
    raw = env.get(name, "").strip()
    if raw == "":
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise ConfigError(f"{name} must be a {' or '.join(s + '://' for s in schemes)} URL")
    try:
        parsed.port
    except ValueError:
        raise ConfigError(f"{name} has a bad port") from None
    return raw


def _secret(env, name):
    value = env.get(name, "").strip()
    if value and len(value) < MIN_KEY_LENGTH:
        raise ConfigError(f"{name} must be at least {MIN_KEY_LENGTH} characters (it has {len(value)})")
    return value


def _keys(env, name):
    """Comma-separated keys: printable ASCII, each at least MIN_KEY_LENGTH characters (a short
    key can be guessed, offline from a copy of the owner ids)."""
    keys = _list(env, name)
    for n, key in enumerate(keys, 1):
        if not key.isascii() or not key.isprintable() or " " in key:
            raise ConfigError(f"{name} must be printable ASCII keys without spaces, separated by commas")
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"{name}: every key must be at least {MIN_KEY_LENGTH} characters "
                              f"(key {n} has {len(key)})")
    return keys


def _list(env, name):
    raw = env.get(name, "")
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    return items


def load_settings(environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> Settings:
    """Build Settings from `environ` (default os.environ) over a `.env` file; raise ConfigError."""
    env: dict[str, str] = {}
    if dotenv is not None:
        env.update(read_dotenv(dotenv))
    env.update(os.environ if environ is None else environ)
    profile = env.get("VENUE_PROFILE", "").strip() or "realistic"
    if profile not in VENUE_PROFILES:
        raise ConfigError(f"VENUE_PROFILE must be one of {', '.join(VENUE_PROFILES)}, got {profile!r}")
    seed_raw = env.get("SIM_SEED", "").strip()
    sim_seed = _int(env, "SIM_SEED", None, 0) if seed_raw else None
    api_keys, admin_keys = _keys(env, "API_KEYS"), _keys(env, "ADMIN_KEYS")
    if set(api_keys) & set(admin_keys):
        raise ConfigError("ADMIN_KEYS: an operator key must not also be one of API_KEYS")
    sim_controls = (env.get("SIM_CONTROLS", "").strip() or "on").lower()
    if sim_controls not in ("on", "off"):
        raise ConfigError(f"SIM_CONTROLS must be on or off, got {sim_controls!r}")
    level = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    allow_private = (env.get("WEBHOOK_ALLOW_PRIVATE", "").strip() or "off").lower()
    if allow_private not in ("on", "off"):
        raise ConfigError(f"WEBHOOK_ALLOW_PRIVATE must be on or off, got {allow_private!r}")
    log_format = (env.get("LOG_FORMAT", "").strip() or "text").lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}")
    redis_url = _url(env, "REDIS_URL", ("redis", "rediss", "redis+cluster", "rediss+cluster"))
    cluster = redis_url is not None and "+cluster://" in redis_url.lower()
    if cluster and urlparse(redis_url).path.strip("/") not in ("", "0"):
        raise ConfigError("REDIS_URL: a Redis Cluster has only database 0")
    return Settings(
        port=_int(env, "PORT", 8000, 1, 65535),
        database_url=_url(env, "DATABASE_URL", ("postgres", "postgresql")),
        data_dir=Path(env.get("ENGINE_DATA_DIR", "").strip() or "./var"),
        redis_url=redis_url,
        bus_shards=_int(env, "BUS_SHARDS", CLUSTER_SHARDS if cluster else 1, 1, 1024),
        worker_concurrency=_int(env, "WORKER_CONCURRENCY", 10, 1, 1000),
        order_rate_limit=_int(env, "ORDER_RATE_LIMIT", 100, 1),
        queue_max_depth=_int(env, "QUEUE_MAX_DEPTH", 10000, 1),
        queue_max_wait_s=_int(env, "QUEUE_MAX_WAIT_SECONDS", 10, 0, 86400),
        retry_attempts=_int(env, "RETRY_ATTEMPTS", 3, 1, 100),
        market_max_wait_s=_int(env, "MARKET_MAX_WAIT_SECONDS", 30, 1, 86400),
        price_collar_bps=_int(env, "PRICE_COLLAR_BPS", 1000, 0, 10000),
        venue_cool_down_s=_int(env, "VENUE_COOL_DOWN_SECONDS", 30, 1, 3600),
        venue_profile=profile,
        venue_failure_rate=_rate(env, "VENUE_FAILURE_RATE", 0.05),
        venue_timeout_rate=_rate(env, "VENUE_TIMEOUT_RATE", 0.02),
        sim_seed=sim_seed,
        api_keys=api_keys,
        admin_keys=admin_keys,
        sim_controls=sim_controls == "on",
        key_rate_limit=_int(env, "KEY_RATE_LIMIT", 600, 1),
        quote_rate_limit=_int(env, "QUOTE_RATE_LIMIT", 600, 0),
        list_rate_limit=_int(env, "LIST_RATE_LIMIT", 600, 0),
        subscribe_rate_limit=_int(env, "SUBSCRIBE_RATE_LIMIT", 1200, 0),
        connect_rate_limit=_int(env, "CONNECT_RATE_LIMIT", 6000, 0),
        trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", 0, 0, 10),
        key_id_secret=_secret(env, "KEY_ID_SECRET"),
        risk_max_order_usd=_usd(env, "RISK_MAX_ORDER_USD"),
        risk_max_open_orders=_int(env, "RISK_MAX_OPEN_ORDERS", 0, 0, 10_000_000),
        risk_max_notional_24h_usd=_usd(env, "RISK_MAX_NOTIONAL_24H_USD"),
        cors_origins=_list(env, "CORS_ORIGINS"),
        webhook_secret=_secret(env, "WEBHOOK_SECRET"),
        webhook_allow_private=allow_private == "on",
        webhook_retry_s=_seconds(env, "WEBHOOK_RETRY_SECONDS", 86400.0, 1, 30 * 86400),
        webhook_timeout_s=_seconds(env, "WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1, 300),
        webhook_concurrency=_int(env, "WEBHOOK_CONCURRENCY", 8, 1, 256),
        log_level=level,
        log_format=log_format,
        heartbeat_ttl_s=_seconds(env, "HEARTBEAT_TTL_SECONDS", 10.0, 0.5, 3600),
        claim_interval_s=_seconds(env, "CLAIM_INTERVAL_SECONDS", 5.0, 0.05, 3600),
        reconcile_every_s=_seconds(env, "RECONCILE_EVERY_SECONDS", 10.0, 0.1, 86400),
        reconcile_min_age_s=_seconds(env, "RECONCILE_MIN_AGE_SECONDS", 10.0, 0.1, 86400),
        trigger_tick_ms=_int(env, "TRIGGER_TICK_MS", 50, 1, 60000),
        batch_wait_ms=_float(env, "BATCH_WAIT_MS", 8.0, 0, 100, "milliseconds"),
        trigger_refresh_s=_seconds(env, "TRIGGER_REFRESH_SECONDS", 5.0, 0.05, 3600),
        quote_stream_interval_ms=_int(env, "QUOTE_STREAM_INTERVAL_MS", 250, 10, 60000),
        quote_stream_refresh_ms=_int(env, "QUOTE_STREAM_REFRESH_MS", 1000, 10, 600000),
        halt_refresh_s=_seconds(env, "HALT_REFRESH_SECONDS", 5.0, 0.05, 3600),
        venue_latency_scale=_float(env, "VENUE_LATENCY_SCALE", 1.0, 0, 100),
        retry_max_delay_s=_seconds(env, "RETRY_MAX_DELAY_SECONDS", 5.0, 0.1, 3600),
        rate_window_s=_seconds(env, "RATE_WINDOW_SECONDS", 60.0, 0.1, 3600),
        order_retention_days=_int(env, "ORDER_RETENTION_DAYS", 0, 0, 36500),
        archive_every_s=_seconds(env, "ARCHIVE_INTERVAL_SECONDS", 3600.0, 0.05, 86400),
        webhook_poll_s=_seconds(env, "WEBHOOK_POLL_SECONDS", 0.5, 0.01, 60),
        webhook_backoff_max_s=_seconds(env, "WEBHOOK_BACKOFF_MAX_SECONDS", 300.0, 0.05, 86400),
    )


# What each variable means, for `engine COMMAND --help` (the README has the same table).
VARIABLES: dict[str, str] = {
    "PORT": "HTTP port of `web` and `run` (default 8000)",
    "DATABASE_URL": "postgresql://user:pass@host:port/db (default: SQLite in ENGINE_DATA_DIR)",
    "ENGINE_DATA_DIR": "where the embedded default keeps its files (default ./var)",
    "REDIS_URL": "redis://host:port/db, or redis+cluster://host:port for a Redis Cluster (default: an in-process "
                 "bus, single process only)",
    "BUS_SHARDS": f"job streams the orders are spread over (on a Redis Cluster also event channels); every "
                  f"process must use the same (default 1; {CLUSTER_SHARDS} on a Redis Cluster)",
    "WORKER_CONCURRENCY": "orders in flight per worker (default 10)",
    "ORDER_RATE_LIMIT": "orders started per 60 s, all workers together (default 100)",
    "QUEUE_MAX_DEPTH": "orders waiting to start before submits answer 503 queue_full (default 10000)",
    "QUEUE_MAX_WAIT_SECONDS": "while the queue's oldest order has waited longer, new market orders answer 503 "
                              "overloaded with Retry-After (default 10; 0: never)",
    "RETRY_ATTEMPTS": "attempts per order on transient errors (default 3)",
    "MARKET_MAX_WAIT_SECONDS": "a market order queued longer than this fails instead of executing (default 30)",
    "PRICE_COLLAR_BPS": "an order whose route pays more than this many bps below the reference price fails "
                        "with price_collar (default 1000; 0: no collar)",
    "VENUE_COOL_DOWN_SECONDS": "a venue that failed most of its recent swaps is skipped this long (default 30)",
    "VENUE_PROFILE": "realistic (quotes ~200 ms, swaps 2-3 s) or instant (default realistic)",
    "VENUE_FAILURE_RATE": "share of swaps that fail transiently (default 0.05)",
    "VENUE_TIMEOUT_RATE": "share of swaps that time out, outcome unknown (default 0.02)",
    "SIM_SEED": "seed of the simulated world when it is first created (default random)",
    "API_KEYS": "comma-separated API keys, each at least 32 characters (default none)",
    "ADMIN_KEYS": "comma-separated operator keys for /api/admin/*, each at least 32 characters; setting them "
                  "turns authentication on (default none)",
    "SIM_CONTROLS": "on, or off to answer the simulator's writes (/api/sim/launch) 404 (default on)",
    "KEY_RATE_LIMIT": "submissions per key per 60 s where keys are configured (default 600)",
    "QUOTE_RATE_LIMIT": "GET /api/quote requests per key (per address without keys) per 60 s (default 600; "
                        "0: off)",
    "LIST_RATE_LIMIT": "GET /api/orders list requests per key (per address without keys) per 60 s (default 600; "
                       "0: off)",
    "SUBSCRIBE_RATE_LIMIT": "subscribe frames on /ws per key (per address without keys) per 60 s, all its "
                            "connections together (default 1200; 0: off)",
    "CONNECT_RATE_LIMIT": "WebSocket handshakes (/ws and the WebSocket submit) per key (per address without keys) "
                          "per 60 s (default 6000; 0: off)",
    "TRUSTED_PROXY_HOPS": "proxies in front of the web that append the client's address to X-Forwarded-For; the "
                          "per-address limits count that address (default 0: the peer's, the header ignored)",
    "KEY_ID_SECRET": "secret (32+ characters) under which API keys become stored owner ids, the same for every "
                     "web process (default: one the engine keeps in its database)",
    "RISK_MAX_ORDER_USD": "the largest order an owner may place, valued in USDC at the reference price "
                          "(default 0: no limit)",
    "RISK_MAX_OPEN_ORDERS": "most orders an owner may have open at once, pending to submitted (default 0: no limit)",
    "RISK_MAX_NOTIONAL_24H_USD": "most USD value an owner may submit in any 24 h, cancelled and expired orders "
                                 "aside (default 0: no limit)",
    "WEBHOOK_SECRET": "master secret (32+ characters) each owner's webhook signing secret derives from, the same "
                      "for every process (default: one the engine keeps in its database)",
    "WEBHOOK_ALLOW_PRIVATE": "on lets callbackUrl reach loopback, private and link-local addresses (default off)",
    "WEBHOOK_RETRY_SECONDS": "a webhook delivery is retried with backoff this long after its event, then given up "
                             "(default 86400)",
    "WEBHOOK_TIMEOUT_SECONDS": "one webhook POST, connecting and answering (default 10)",
    "WEBHOOK_CONCURRENCY": "webhook POSTs in flight per worker (default 8)",
    "WEBHOOK_POLL_SECONDS": "how often a worker looks for webhook deliveries due (default 0.5)",
    "WEBHOOK_BACKOFF_MAX_SECONDS": "the longest wait between two tries of a webhook delivery: 1 s doubling up to "
                                   "this, jittered (default 300)",
    "CORS_ORIGINS": "origins allowed to call the API from a browser (default none)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)",
    "LOG_FORMAT": "text, or json for one JSON object a line (default text)",
    "HEARTBEAT_TTL_SECONDS": "a worker silent this long is dead and others take its jobs; it beats every tenth "
                             "of it (default 10)",
    "CLAIM_INTERVAL_SECONDS": "how often a worker looks for the jobs of dead workers (default 5)",
    "RECONCILE_EVERY_SECONDS": "how often unfinished orders that lost their job are queued again; the bus's "
                               "epoch is checked every fifth of it (default 10)",
    "RECONCILE_MIN_AGE_SECONDS": "orders younger than this are not queued again: they may be on their way "
                                 "(default 10)",
    "TRIGGER_TICK_MS": "how often armed limit orders are priced while any are armed (default 50)",
    "BATCH_WAIT_MS": "the longest a batch of one (a commit, a block, a fetch) waits for company while orders "
                     "come faster than that and waiting brings company; 0: never (default 8)",
    "TRIGGER_REFRESH_SECONDS": "how often a worker forgets armed orders cancelled or taken over (default 5)",
    "QUOTE_STREAM_INTERVAL_MS": "streamed quotes (subscribeQuote on /ws): each subscription gets at most one "
                                "frame this often; pool changes are coalesced to it (default 250)",
    "QUOTE_STREAM_REFRESH_MS": "streamed quotes are computed again this often even when no swap moved their pools "
                               "(the simulated prices drift; default 1000)",
    "HALT_REFRESH_SECONDS": "how often every process reads the active halts again, in case it missed the "
                            "broadcast of a halt or resume (default 5)",
    "VENUE_LATENCY_SCALE": "factor on the realistic venues' latency (quotes ~200 ms, swaps 2-3 s; default 1)",
    "RETRY_MAX_DELAY_SECONDS": "the longest wait before a retry: 0.1 s doubling up to this, jittered (default 5)",
    "RATE_WINDOW_SECONDS": "the window of KEY_RATE_LIMIT and the per-key/per-address limits (default 60; tests "
                           "shorten it)",
    "ORDER_RETENTION_DAYS": "finished orders leave the hot tables for monthly archives once their month ended "
                            "more than this many days ago; unfinished and armed orders never (default 0: keep "
                            "everything)",
    "ARCHIVE_INTERVAL_SECONDS": "how often the workers run the archive job, one at a time; it also keeps the "
                                "events' monthly partitions ready (default 3600)",
}
