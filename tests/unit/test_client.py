"""The command-line client's pieces without an engine: settings, help texts, formatting."""
from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest

from config import ConfigError
from config.client import load_client_settings
from engine import SERVER_COMMANDS, build_parser
from web.client.api import RequestRefused
from web.client.cli import COMMANDS
from web.client.progress import WatchView
from web.client.render import Output, age, amount, describe_event, error_sentence


def test_the_url_comes_from_the_flag_then_ENGINE_URL_then_localhost_and_PORT():
    assert load_client_settings({}, dotenv=None).url == "http://localhost:8000"
    assert load_client_settings({"PORT": "9001"}, dotenv=None).url == "http://localhost:9001"
    env = {"PORT": "9001", "ENGINE_URL": "https://engine.example:8443/"}
    assert load_client_settings(env, dotenv=None).url == "https://engine.example:8443"
    assert load_client_settings(env, dotenv=None, url="http://127.0.0.1:1").url == "http://127.0.0.1:1"
    assert load_client_settings({"ENGINE_API_KEY": " k1 "}, dotenv=None).api_key == "k1"
    assert load_client_settings({}, dotenv=None).api_key is None


def test_a_bad_url_or_port_is_a_message_naming_where_it_came_from():
    with pytest.raises(ConfigError, match="ENGINE_URL"):
        load_client_settings({"ENGINE_URL": "localhost:8000"}, dotenv=None)
    with pytest.raises(ConfigError, match="PORT"):
        load_client_settings({"PORT": "eighty"}, dotenv=None)


def _help(command: str | None) -> str:
    parser = build_parser()
    if command is None:
        return parser.format_help()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return subparsers.choices[command].format_help()


def test_help_lists_the_environment_variables_each_command_reads():
    top = _help(None)
    for name in ("PORT", "DATABASE_URL", "REDIS_URL", "ENGINE_URL", "ENGINE_API_KEY", "API_KEYS"):
        assert name in top
    for command in COMMANDS:
        text = _help(command)
        assert "ENGINE_URL" in text and "ENGINE_API_KEY" in text and "PORT" in text and "--url" in text
        assert "exit codes" in text
    assert "PORT" in _help("run") and "PORT" in _help("web")  # looking for --port finds PORT
    assert "WORKER_CONCURRENCY" in _help("worker") and "PORT" not in _help("worker")
    assert "DATABASE_URL" in _help("migrate")
    assert set(SERVER_COMMANDS) == {"run", "web", "worker", "migrate"}


def test_amounts_are_shortened_exactly_and_ages_read_like_a_person_would():
    assert amount("225.933871123456") == "225.933871"
    assert amount("0.00001") == "0.00001"
    assert amount("18446744073709.551615") == "18446744073709"
    assert amount(None) == ""
    now = datetime(2026, 11, 25, 16, 0, 0, tzinfo=timezone.utc)
    assert age("2026-11-25T15:59:18.000Z", now) == "42 s"
    assert age("2026-11-25T15:57:00.000Z", now) == "3 min"
    assert age("2026-11-23T15:00:00.000Z", now) == "2 d"


ROUTING = {"orderId": "o", "seq": 5, "status": "routing", "attempt": 2, "timestamp": "2026-11-25T16:31:49.718Z",
           "meta": {"bestDex": "meteora", "retryReason": "transient: Blockhash not found",
                    "quotes": {"raydium": {"amountOut": "224.39"}, "meteora": {"amountOut": "225.95"}},
                    "route": {"legs": [], "amountOut": "225.95", "minAmountOut": "224.82"}}}


def test_events_are_described_with_quotes_choice_retry_reason_and_outcome():
    text = describe_event(ROUTING, "SOL", "USDC")
    assert text.startswith("retry 2: transient: Blockhash not found")
    assert "raydium 224.39, meteora 225.95 -> meteora (min 224.82 USDC)" in text
    failed = {"status": "failed", "attempt": 1, "meta": {"error": {"code": "slippage_exceeded", "message": "m"},
                                                          "attempts": 3}}
    assert describe_event(failed) == "slippage_exceeded: m (attempts: 3)"


def test_api_errors_read_as_sentences_with_what_to_do():
    refused = RequestRefused(400, "same_token", "tokenIn and tokenOut are both SOL", "tokenOut")
    assert error_sentence(refused) == "tokenIn and tokenOut are both SOL [tokenOut] (same_token)"
    assert "ENGINE_API_KEY" in error_sentence(RequestRefused(401, "unauthorized", "a key is needed"))
    assert "retry in 7 s" in error_sentence(RequestRefused(429, "rate_limited", "slow down", retry_after="7"))
    assert RequestRefused(503, "queue_full", "busy").retryable and not refused.retryable


def test_the_progress_line_moves_through_the_statuses_on_a_terminal():
    stream = io.StringIO()
    out = Output("tty", stdout=stream)
    out.console.width = 200
    order = {"orderId": "4b0c1234-0000-0000-0000-000000000000", "tokenIn": "SOL", "tokenOut": "USDC"}
    with WatchView(out, order) as view:
        for status in ("pending", "routing"):
            view.event({**ROUTING, "status": status, "attempt": 1, "meta": ROUTING["meta"] if status == "routing"
                        else {}})
        assert "pending > routing" in view._line().plain and "meteora, min 224.82 USDC" in view._line().plain
        view.finish({"status": "confirmed", "meta": {"amountIn": "1.5", "amountOut": "225.95", "dex": "meteora",
                                                      "executedPrice": "150.63", "txHash": "sig"}})
    printed = stream.getvalue()
    assert "1.5 SOL -> 225.95 USDC on meteora at 150.63 USDC/SOL" in printed and "sig" in printed
