"""The metrics a web process derives from events: label values bounded, bad events harmless."""
from __future__ import annotations

from actors.retry import PERMANENT_ERRORS
from storage.records import BusEvent
from storage.venues.sim.ledger import RETRIABLE
from web.metrics import ERROR_CODES, EventFigures, _Histogram, error_code, retry_code


def event(status: str, text: bytes, seq: int = 2) -> BusEvent:
    return BusEvent("order-1", seq, status, "", text)


def test_the_engines_permanent_and_retriable_codes_each_have_a_label_of_their_own():
    assert PERMANENT_ERRORS <= ERROR_CODES
    assert RETRIABLE <= ERROR_CODES


def test_a_retry_reason_is_counted_by_its_code_and_anything_else_as_other():
    assert retry_code("slippage_exceeded: the output was 1 below the minimum") == "slippage_exceeded"
    assert retry_code("transient") == "transient"
    assert retry_code("the venue said: no") == "other"
    assert retry_code(None) == "other"
    assert error_code("rug_pulled") == "other" and error_code(["a list"]) == "other"


def test_a_malformed_event_is_counted_by_status_and_otherwise_skipped(caplog):
    figures = EventFigures()
    figures.observe(event("routing", b"not json"))
    figures.observe(event("routing", b'{"meta": {"quotes": {"raydium": "a string, not a quote"}}}'))
    figures.observe(event("confirmed", b'{"meta": {"dex": "raydium", "latencyMs": true}}'))
    figures.observe(event("teleported", b"{}"))
    assert figures.events["routing"] == 2 and figures.events["confirmed"] == 1 and figures.events["other"] == 1
    assert figures.swaps[("raydium", "confirmed")] == 1
    assert sum(figures.latency["confirmed"].counts) == 0, "a boolean is no latency"
    assert len([r for r in caplog.records if "cannot read" in r.getMessage()]) == 1, "said once"


def test_a_histogram_counts_a_value_on_a_bound_in_that_bound():
    histogram = _Histogram((0.1, 0.2))
    for value in (0.1, 0.15, 0.2, 7):
        histogram.observe(value)
    assert histogram.buckets() == [("0.1", 1), ("0.2", 3), ("+Inf", 4)]
    assert histogram.sum == 0.1 + 0.15 + 0.2 + 7


def test_a_venue_skipped_by_its_circuit_breaker_is_counted_per_venue():
    figures = EventFigures()
    skipped = (b'{"meta": {"quotes": {"raydium": {"error": {"code": "circuit_open", "message": "m"}}, '
               b'"meteora": {"amountOut": "1"}}, "route": {"legs": [{"dex": "meteora"}]}}}')
    figures.observe(event("routing", skipped))
    figures.observe(event("routing", b'{"meta": {"quotes": {"raydium": {"error": {"code": "no_pool"}}}}}'))
    assert figures.skipped == {"raydium": 1, "meteora": 0}
    names = {metric.name for metric in figures.collect()}
    assert "engine_venue_skipped" in names


def test_a_route_through_an_intermediate_token_counts_each_venue_of_each_hop_as_a_hop():
    figures = EventFigures()
    hops = (b'{"meta": {"route": {"hops": [{"tokenIn": "BONK", "tokenOut": "SOL", "legs": [{"dex": "raydium"}]}, '
            b'{"tokenIn": "SOL", "tokenOut": "JUP", "legs": [{"dex": "raydium"}, {"dex": "meteora"}]}]}}}')
    figures.observe(event("routing", hops))
    assert figures.routes[("raydium", "hop")] == 2 and figures.routes[("meteora", "hop")] == 1
    assert figures.routes[("raydium", "single")] == figures.routes[("raydium", "split")] == 0
