"""One OrderActor fed messages in an order the test chooses (the Mopidy way: the actor is
built, not started, and nothing runs on another thread). A pooled actor runs order after
order, so a late reply meant for an earlier step or an earlier order must change nothing."""
from __future__ import annotations

import itertools
from decimal import Decimal
from uuid import uuid4

from actors.messages import (AppendEvents, EventsStored, OrderFinished, QuoteReceived, RequestQuote, RetryDue,
                             RunOrder, SendSwap, SwapSettled)
from actors.order_actor import OrderActor
from actors.retry import RetryPolicy
from config import find_token
from storage.records import EventRecord, OrderRecord, decimal_str, utcnow
from storage.venues.base import Quote, SwapResult

SOL, USDC = find_token("SOL"), find_token("USDC")


class Inbox:
    """Stands in for an ActorRef: records what it is told."""

    def __init__(self):
        self.told = []

    def tell(self, message):
        self.told.append(message)

    def take(self, kind):
        found = [m for m in self.told if isinstance(m, kind)]
        self.told = [m for m in self.told if not isinstance(m, kind)]
        return found


class Directory:
    def __init__(self):
        self.refs = {name: Inbox() for name in ("raydium", "meteora", "event_writer")}

    def get(self, name):
        return self.refs[name]


class Handle:
    def cancel(self):
        pass


class ManualTimers:
    """Timers that never fire on their own (the test fires what it wants)."""

    def call_later(self, delay, callback):
        return Handle()


def pending_order() -> OrderRecord:
    now = utcnow()
    oid = uuid4()
    return OrderRecord(id=oid, owner="", status="pending", type="market", token_in="SOL", token_out="USDC",
                       amount=Decimal("1"), slippage_bps=50, limit_price=None, expires_in_seconds=None,
                       client_order_id=None, created_at=now, updated_at=now, attempts=0, attempt=1, last_seq=1,
                       route=None, fills=[], error=None, events=(EventRecord(oid, 1, "pending", 1, now, {}),))


def make_actor(**options):
    directory, router = Directory(), Inbox()
    signatures = (f"sig-{n}" for n in itertools.count(1))
    actor = OrderActor(directory=directory, timers=ManualTimers(), router=router,
                       policy=RetryPolicy(attempts=3), new_signature=lambda: next(signatures), **options)
    return actor, directory, router


def quote(dex: str, out: int) -> Quote:
    return Quote(dex, SOL, USDC, 10**9, out, Decimal("0.0025"), 0, 1, utcnow())


def stored(append: AppendEvents) -> EventsStored:
    records = [EventRecord(d.order_id, n + 2, d.status, d.attempt, d.timestamp, d.meta)
               for n, d in enumerate(append.drafts)]
    return EventsStored(records, append.tag)


def run_to_send(actor, directory, order):
    """Feed the order up to its swap; return (the quote requests, the store request, the swap)."""
    actor.on_receive(RunOrder(order))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    for request, dex, out in zip(requests, ("raydium", "meteora"), (150_000_000, 149_000_000)):
        actor.on_receive(QuoteReceived(request.request_id, dex, quote(dex, out)))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    actor.on_receive(stored(append))
    (send,) = directory.refs["raydium"].take(SendSwap)
    return requests, append, send


def test_routing_building_and_submitted_are_stored_together_before_the_swap_is_sent():
    actor, directory, _ = make_actor()
    actor.on_receive(RunOrder(pending_order()))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    assert len(requests) == 2
    actor.on_receive(QuoteReceived(requests[0].request_id, "raydium", quote("raydium", 150_000_000)))
    assert directory.refs["event_writer"].told == [], "one quote is not enough to route"
    actor.on_receive(QuoteReceived(requests[1].request_id, "meteora", quote("meteora", 149_000_000)))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    assert [d.status for d in append.drafts] == ["routing", "building", "submitted"]
    assert append.drafts[2].meta == {"txHash": "sig-1", "dex": "raydium"}
    assert directory.refs["raydium"].take(SendSwap) == [], "nothing is sent before it is stored"
    actor.on_receive(stored(append))
    (send,) = directory.refs["raydium"].take(SendSwap)
    assert send.request.signature == "sig-1" and send.request.min_amount_out == 149_250_000


def test_each_quote_in_the_routing_event_carries_its_venues_round_trip():
    now = [100.0]
    actor, directory, _ = make_actor(clock=lambda: now[0])
    actor.on_receive(RunOrder(pending_order()))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    now[0] = 100.0123
    actor.on_receive(QuoteReceived(requests[1].request_id, "meteora", quote("meteora", 149_000_000)))
    now[0] = 100.25
    actor.on_receive(QuoteReceived(requests[0].request_id, "raydium", quote("raydium", 150_000_000)))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    quotes = append.drafts[0].meta["quotes"]
    assert quotes["meteora"]["latencyMs"] == 12.3 and quotes["raydium"]["latencyMs"] == 250.0
    assert quotes["raydium"]["amountOut"] == "150", "the spec's quote fields are all still there"


def test_a_failed_swap_is_named_once_in_the_retrys_routing_event_and_then_in_the_failed_event():
    actor, directory, _ = make_actor()
    _, _, send = run_to_send(actor, directory, pending_order())
    actor.on_receive(SwapSettled(SwapResult(send.request.signature, "failed", error_code="slippage_exceeded",
                                            message="below the minimum", retriable=True)))
    actor.on_receive(RetryDue(2, actor.step))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    for request, dex, out in zip(requests, ("raydium", "meteora"), (150_000_000, 149_000_000)):
        actor.on_receive(QuoteReceived(request.request_id, dex, quote(dex, out)))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    routing = append.drafts[0].meta
    assert routing["retryReason"].startswith("slippage_exceeded:")
    assert routing["failedSwaps"] == [{"dex": "raydium", "code": "slippage_exceeded", "txHash": "sig-1"}]
    actor.on_receive(stored(append))
    (send,) = directory.refs["raydium"].take(SendSwap)
    actor.on_receive(SwapSettled(SwapResult(send.request.signature, "failed", error_code="insufficient_liquidity",
                                            message="the pool is drained", retriable=False)))
    (failed,) = directory.refs["event_writer"].take(AppendEvents)
    assert failed.drafts[0].status == "failed"
    assert failed.drafts[0].meta["failedSwaps"] == [
        {"dex": "raydium", "code": "insufficient_liquidity", "txHash": "sig-2"}], "sig-1 was named already"


def test_a_late_reply_for_an_earlier_step_changes_nothing():
    actor, directory, _ = make_actor()
    requests, append, send = run_to_send(actor, directory, pending_order())
    actor.on_receive(QuoteReceived(requests[0].request_id, "raydium", quote("raydium", 1)))  # late quote
    actor.on_receive(stored(append))  # the store answer again
    assert directory.refs["event_writer"].told == [] and directory.refs["raydium"].told == []
    actor.on_receive(SwapSettled(SwapResult(send.request.signature, "confirmed", 150_000_000)))
    (confirm,) = directory.refs["event_writer"].take(AppendEvents)
    assert [d.status for d in confirm.drafts] == ["confirmed"]


def test_a_pooled_actor_ignores_replies_meant_for_its_previous_order():
    actor, directory, router = make_actor()
    first = pending_order()
    _, _, send = run_to_send(actor, directory, first)
    actor.on_receive(SwapSettled(SwapResult(send.request.signature, "confirmed", 150_000_000)))
    (confirm,) = directory.refs["event_writer"].take(AppendEvents)
    actor.on_receive(stored(confirm))
    assert [m.order_id for m in router.take(OrderFinished)] == [str(first.id)]

    second = pending_order()
    actor.on_receive(RunOrder(second))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    # Replies meant for the first order arrive late: a repeated swap answer and store answer.
    actor.on_receive(SwapSettled(SwapResult(send.request.signature, "confirmed", 150_000_000)))
    actor.on_receive(stored(confirm))
    assert directory.refs["event_writer"].told == [] and router.told == []
    for request, dex in zip(requests, ("raydium", "meteora")):
        actor.on_receive(QuoteReceived(request.request_id, dex, quote(dex, 150_000_000)))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    assert {d.order_id for d in append.drafts} == {second.id}


def curve_quote(dex: str, amount_in: int, reserve_in: int, reserve_out: int) -> Quote:
    from storage.venues.curve import ConstantProductCurve

    curve = ConstantProductCurve(reserve_in, reserve_out, 25)
    return Quote(dex, SOL, USDC, amount_in, curve.out(amount_in), Decimal("0.0025"), 0, 1, utcnow(), curve=curve)


SPLIT_POOLS = {"raydium": (20_000 * 10**9, 3_000_000 * 10**6), "meteora": (18_000 * 10**9, 2_700_000 * 10**6)}


def _routed_split():
    """A 1000 SOL order (large: splitting pays) quoted on both pools: (actor, directory, the
    AppendEvents of its routing, building and submitted)."""
    actor, directory, router = make_actor()
    order = pending_order()
    actor.on_receive(RunOrder(order.__class__(**{**order.__dict__, "amount": Decimal("1000")})))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    for request, dex in zip(requests, ("raydium", "meteora")):
        actor.on_receive(QuoteReceived(request.request_id, dex,
                                       curve_quote(dex, request.amount_in, *SPLIT_POOLS[dex])))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    return actor, directory, append


def test_a_split_order_sends_each_leg_and_retries_only_the_leg_that_failed():
    actor, directory, append = _routed_split()
    amount = 1000 * 10**9
    routing, building, submitted = (d.meta for d in append.drafts)
    assert len(routing["route"]["legs"]) == 2 and len(building["legs"]) == 2 and len(submitted["legs"]) == 2
    assert submitted["txHash"] == submitted["legs"][0]["txHash"]
    actor.on_receive(stored(append))
    sends = directory.refs["raydium"].take(SendSwap) + directory.refs["meteora"].take(SendSwap)
    assert sorted(s.request.dex for s in sends) == ["meteora", "raydium"]
    assert sum(s.request.amount_in for s in sends) == amount
    good, bad = sends
    good_out = good.request.min_amount_out  # the worst it may give
    actor.on_receive(SwapSettled(SwapResult(good.request.signature, "confirmed", good_out)))
    assert directory.refs["event_writer"].told == [], "one leg is still out"
    actor.on_receive(SwapSettled(SwapResult(bad.request.signature, "failed", error_code="transient",
                                            message="blockhash not found", retriable=True)))
    actor.on_receive(RetryDue(2, actor.step))  # the retry's timer, fired by hand
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    assert {r.amount_in for r in requests} == {bad.request.amount_in}, "only the failed leg's amount is routed"
    small = {"raydium": (10**15, 10**15 * 150 // 1000), "meteora": (10**15, 10**15 * 149 // 1000)}  # deep: no split
    for request, dex in zip(requests, ("raydium", "meteora")):
        actor.on_receive(QuoteReceived(request.request_id, dex, curve_quote(dex, request.amount_in, *small[dex])))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    assert append.drafts[0].attempt == 2
    assert append.drafts[0].meta["filledLegs"] == [
        {"dex": good.request.dex, "amountIn": decimal_str(SOL.to_whole(good.request.amount_in)),
         "amountOut": decimal_str(USDC.to_whole(good_out)), "txHash": good.request.signature}]
    actor.on_receive(stored(append))
    (last,) = directory.refs["raydium"].take(SendSwap)
    last_out = last.request.min_amount_out
    actor.on_receive(SwapSettled(SwapResult(last.request.signature, "confirmed", last_out)))
    (confirm,) = directory.refs["event_writer"].take(AppendEvents)
    meta = confirm.drafts[0].meta
    assert meta["amountOut"] == decimal_str(USDC.to_whole(good_out + last_out)) and meta["amountIn"] == "1000"
    assert [leg["txHash"] for leg in meta["legs"]] == [good.request.signature, last.request.signature]


def _split_with_one_leg_filled():
    """A 1000 SOL order split over both venues, its first leg filled at the worst it may give
    and its second failed; its retry asks for quotes of the rest. (actor, directory, the
    order's minimum for the whole amount, what the filled leg gave, the retry's requests)."""
    actor, directory, append = _routed_split()
    order_min = USDC.to_base(Decimal(append.drafts[0].meta["route"]["minAmountOut"]))
    actor.on_receive(stored(append))
    good, bad = directory.refs["raydium"].take(SendSwap) + directory.refs["meteora"].take(SendSwap)
    actor.on_receive(SwapSettled(SwapResult(good.request.signature, "confirmed", good.request.min_amount_out)))
    actor.on_receive(SwapSettled(SwapResult(bad.request.signature, "failed", error_code="transient",
                                            message="blockhash not found", retriable=True)))
    actor.on_receive(RetryDue(2, actor.step))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    return actor, directory, order_min, good.request.min_amount_out, requests


def test_a_split_order_s_retry_of_the_rest_must_bring_the_whole_amount_to_the_order_s_minimum():
    actor, directory, order_min, filled, requests = _split_with_one_leg_filled()
    rest = requests[0].amount_in
    # The price has dropped since, but the rest can still make up the order's minimum.
    needed = order_min - filled
    deep = {dex: (10**15, 10**15 * (needed * 101 // 100) // rest) for dex in ("raydium", "meteora")}
    for request, dex in zip(requests, ("raydium", "meteora")):
        actor.on_receive(QuoteReceived(request.request_id, dex, curve_quote(dex, request.amount_in, *deep[dex])))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    routing = append.drafts[0].meta
    assert USDC.to_base(Decimal(routing["route"]["minAmountOut"])) >= needed, \
        "the rest's minimum is what the order still needs, not the rest's own slippage below a worse price"
    assert USDC.to_base(Decimal(routing["orderMinAmountOut"])) == order_min  # for a worker that resumes it


def test_a_split_order_whose_rest_would_fill_below_the_order_s_minimum_is_not_sent():
    actor, directory, order_min, filled, requests = _split_with_one_leg_filled()
    rest = requests[0].amount_in
    needed = order_min - filled
    worse = {dex: (10**15, 10**15 * (needed * 9 // 10) // rest) for dex in ("raydium", "meteora")}  # 10% short
    for request, dex in zip(requests, ("raydium", "meteora")):
        actor.on_receive(QuoteReceived(request.request_id, dex, curve_quote(dex, request.amount_in, *worse[dex])))
    assert directory.refs["event_writer"].take(AppendEvents) == [], "no routing: nothing is sent below the minimum"
    assert directory.refs["raydium"].take(SendSwap) + directory.refs["meteora"].take(SendSwap) == []
    assert "slippage_exceeded" in actor.retry_reason


def test_a_route_too_far_below_the_reference_price_fails_with_price_collar_and_sends_nothing():
    from storage.venues.collar import PriceCollar, SimulatorReferencePrices

    # SOL's reference is 150 USDC; a 10% collar. 1 SOL for 134 USDC is 10.7% below: refused.
    actor, directory, router = make_actor(collar=PriceCollar(SimulatorReferencePrices(), 1000))
    actor.on_receive(RunOrder(pending_order()))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    for request, dex, out in zip(requests, ("raydium", "meteora"), (134_000_000, 130_000_000)):
        actor.on_receive(QuoteReceived(request.request_id, dex, quote(dex, out)))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    (failed,) = append.drafts
    assert failed.status == "failed" and failed.meta["error"]["code"] == "price_collar", failed.meta
    assert "10.7% below the reference price 150" in failed.meta["error"]["message"]
    assert directory.refs["raydium"].take(SendSwap) == [] and directory.refs["meteora"].take(SendSwap) == []


def test_a_route_within_the_collar_executes():
    from storage.venues.collar import PriceCollar, SimulatorReferencePrices

    actor, directory, router = make_actor(collar=PriceCollar(SimulatorReferencePrices(), 1000))
    actor.on_receive(RunOrder(pending_order()))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    for request, dex, out in zip(requests, ("raydium", "meteora"), (136_000_000, 130_000_000)):  # 9.3% below
        actor.on_receive(QuoteReceived(request.request_id, dex, quote(dex, out)))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    assert [d.status for d in append.drafts] == ["routing", "building", "submitted"]


def protective_order(type_: str, events=(), **fields) -> OrderRecord:
    from dataclasses import replace

    order = replace(pending_order(), type=type_, **fields)
    if events:
        order = replace(order, status="waiting", last_seq=1 + len(events),
                        events=order.events + tuple(EventRecord(order.id, n + 2, "waiting", 1, utcnow(), meta)
                                                    for n, meta in enumerate(events)))
    return order


def quoted(actor, directory, order, out: int = 150_000_000) -> AppendEvents:
    """Run the order to its first store: both venues quote `out` USDC base units for 1 SOL."""
    actor.on_receive(RunOrder(order))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    for request, dex in zip(requests, ("raydium", "meteora")):
        actor.on_receive(QuoteReceived(request.request_id, dex, quote(dex, out)))
    (append,) = directory.refs["event_writer"].take(AppendEvents)
    return append


def test_an_oco_whose_two_sides_hold_at_its_first_quote_stores_its_stop_loss_firing_then_sells_at_market():
    actor, directory, router = make_actor()
    order = protective_order("oco", limit_price=Decimal("140"), stop_price=Decimal("160"))
    append = quoted(actor, directory, order)  # 150: above its target, below its stop
    (fired,) = append.drafts
    assert fired.status == "waiting" and fired.meta["fired"] == "stopLoss" and fired.meta["cancelled"] == "takeProfit"
    actor.on_receive(stored(append))
    (route,) = directory.refs["event_writer"].take(AppendEvents)
    assert [d.status for d in route.drafts] == ["routing", "building", "submitted"]
    building = route.drafts[1].meta
    assert building["minAmountOut"] == "149.25", "the stopLoss side sells at market (its 50 bps slippage)"


def test_a_resumed_trailing_stop_trails_from_its_stored_mark_not_from_the_price_of_the_moment():
    actor, directory, router = make_actor(worker_id="w2")
    mark = {"trigger": "trail", "highWater": "160", "trailPercent": "5"}
    order = protective_order("trailing_stop", events=(mark,), trail_percent=Decimal("5"))
    append = quoted(actor, directory, order)  # 150 is below 160 - 5% = 152: it fires at once
    (fired,) = append.drafts
    assert fired.meta["fired"] == "trailingStop" and fired.meta["highWater"] == "160"
    higher = protective_order("trailing_stop", events=({**mark, "highWater": "155"},), trail_percent=Decimal("5"))
    actor2, directory2, router2 = make_actor(worker_id="w2")
    append = quoted(actor2, directory2, higher)  # 150 is above 155 - 5%: it waits, from 155
    (armed,) = append.drafts
    assert armed.status == "waiting" and armed.meta["highWater"] == "155" and "fired" not in armed.meta
    actor2.on_receive(stored(append))
    (finished,) = router2.take(OrderFinished)
    assert finished.armed.high == 155.0 and finished.armed.trail == 0.05 and finished.armed.protect == "trailing_stop"


def test_a_resumed_trailing_stop_by_amount_trails_from_its_stored_mark_less_its_amount():
    actor, directory, router = make_actor(worker_id="w2")
    mark = {"trigger": "trail", "highWater": "160", "trailAmount": "8"}
    order = protective_order("trailing_stop", events=(mark,), trail_amount=Decimal("8"))
    append = quoted(actor, directory, order)  # 150 is below 160 - 8 = 152: it fires at once
    (fired,) = append.drafts
    assert fired.meta["fired"] == "trailingStop" and fired.meta["highWater"] == "160"
    assert fired.meta["trailAmount"] == "8" and fired.meta["stopPrice"] == "152" and "trailPercent" not in fired.meta
    higher = protective_order("trailing_stop", events=({**mark, "highWater": "157"},), trail_amount=Decimal("8"))
    actor2, directory2, router2 = make_actor(worker_id="w2")
    append = quoted(actor2, directory2, higher)  # 150 is above 157 - 8 = 149: it waits, from 157
    (armed,) = append.drafts
    assert armed.status == "waiting" and "fired" not in armed.meta
    assert (armed.meta["highWater"], armed.meta["stopPrice"], armed.meta["trailAmount"]) == ("157", "149", "8")
    actor2.on_receive(stored(append))
    (finished,) = router2.take(OrderFinished)
    armed = finished.armed
    assert (armed.high, armed.trail_amount, armed.trail, armed.protect) == (157.0, 8.0, 0.0, "trailing_stop")


def test_a_fired_stop_limit_below_its_floor_waits_as_a_limit_at_its_floor():
    actor, directory, router = make_actor()
    order = protective_order("stop_loss", events=({"trigger": "stop", "fired": "stopLoss"},),
                             stop_price=Decimal("155"), stop_limit_price=Decimal("152"))
    actor.on_receive(RunOrder(order))
    requests = directory.refs["raydium"].take(RequestQuote) + directory.refs["meteora"].take(RequestQuote)
    for request, dex in zip(requests, ("raydium", "meteora")):
        actor.on_receive(QuoteReceived(request.request_id, dex, quote(dex, 150_000_000)))
    assert directory.refs["event_writer"].take(AppendEvents) == [], "already waiting: nothing more to store"
    (finished,) = router.take(OrderFinished)
    armed = finished.armed
    assert armed.min_out == 152_000_000 and armed.stop_price == 0.0 and armed.protect == ""
