"""The web's own operational metrics: readiness, halts, error answers, listeners (no storage)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from storage.bus import QueueStats
from web.metrics import WebMetrics


def exposed(metrics: WebMetrics) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}


def test_readiness_follows_the_last_reads_and_a_failed_read_keeps_the_old_figures():
    metrics = WebMetrics()
    assert exposed(metrics)[("engine_ready", frozenset({("check", "bus")}))] == 0, "unknown until checked"
    metrics.refresh({"pending": 2}, QueueStats(2, 1.5))
    metrics.refresh(None, None)  # both unreachable
    found = exposed(metrics)
    assert found[("engine_ready", frozenset({("check", "database")}))] == 0
    assert found[("engine_ready", frozenset({("check", "bus")}))] == 0
    assert found[("engine_orders", frozenset({("status", "pending")}))] == 2
    assert found[("engine_queue_oldest_age_seconds", frozenset())] == 1.5
    metrics.set_ready("database", True)
    assert exposed(metrics)[("engine_ready", frozenset({("check", "database")}))] == 1


def test_halts_in_force_are_read_from_the_callable_when_scraped_and_zero_by_default():
    assert exposed(WebMetrics())[("engine_halts_active", frozenset())] == 0
    halts = [2]
    assert exposed(WebMetrics(halts=lambda: halts[0]))[("engine_halts_active", frozenset())] == 2


def test_error_answers_keep_the_api_s_codes_and_count_any_other_as_other():
    metrics = WebMetrics()
    for code in ("rate_limited", "rate_limited", "overloaded", "a code of nobody's", None):
        metrics.answered_error(code)
    metrics.listener_too_slow()
    metrics.observe_dispatch_lag(-0.001)  # a clock step back counts as no lag
    found = exposed(metrics)
    assert found[("engine_error_answers_total", frozenset({("code", "rate_limited")}))] == 2
    assert found[("engine_error_answers_total", frozenset({("code", "overloaded")}))] == 1
    assert found[("engine_error_answers_total", frozenset({("code", "other")}))] == 2
    assert found[("engine_listeners_too_slow_total", frozenset())] == 1
    assert found[("engine_event_dispatch_lag_seconds_bucket", frozenset({("le", "0.001")}))] == 1
