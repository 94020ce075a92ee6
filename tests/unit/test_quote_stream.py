"""The quote stream alone: subscriptions grouped by quote, one computation per quote and tick,
coalescing and pools notices, with a counting quote function and a clock the test moves."""
from __future__ import annotations

import asyncio
import json

import pytest

from storage.bus_memory import InProcessBus
from storage.records import decimal_str
from storage.pool_notices import pools_changed
from web.errors import ApiError, ValidationError
from web.quote_stream import MAX_QUOTE_SUBSCRIPTIONS, NOTICE_SETTLE_S, QuoteStream, frame
from web.validation import parse_quote_command


def request(token_in="SOL", token_out="USDC", amount="1.5"):
    return parse_quote_command({"action": "subscribeQuote", "tokenIn": token_in, "tokenOut": token_out,
                                "amount": amount})


class Prices:
    """The quote function: counts its calls; `price` per pair, changed by the test."""

    def __init__(self):
        self.calls = 0
        self.price = {"SOL/USDC": "150", "BONK/USDC": "0.00002"}

    def __call__(self, req) -> dict:
        self.calls += 1
        pair = f"{req.token_in.symbol}/{req.token_out.symbol}"
        if pair not in self.price:
            raise ApiError(400, "no_route", "no venue can fill this order")
        return {"tokenIn": req.token_in.symbol, "amountIn": decimal_str(req.amount), "price": self.price[pair]}


class Socket:
    def __init__(self):
        self.frames: list[dict] = []

    def send_text(self, text: bytes) -> None:
        self.frames.append(json.loads(text))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def direct(fn, *args):  # the executor, without threads
    return fn(*args)


def stream(prices, clock, **options) -> QuoteStream:
    return QuoteStream(prices, direct, interval_s=0.25, refresh_s=1.0, clock=clock, **options)


async def tick(quotes: QuoteStream) -> None:
    task = quotes.tick()
    if task is not None:
        await task


def test_one_price_move_is_computed_once_for_every_subscriber_of_that_quote():
    async def scenario():
        prices, clock = Prices(), Clock()
        quotes = stream(prices, clock)
        sockets = [Socket() for _ in range(500)]
        ids = [quotes.subscribe(s, request()) for s in sockets]
        other = Socket()
        quotes.subscribe(other, request("BONK", "USDC", "1000"))
        await tick(quotes)
        assert prices.calls == 2 and quotes.computations == 2  # two quotes, 501 subscribers
        assert all(s.frames == [{"type": "quote", "subscriptionId": i, "tokenIn": "SOL", "amountIn": "1.5",
                                 "price": "150"}] for s, i in zip(sockets, ids))
        prices.price["SOL/USDC"] = "151"
        quotes.pools_changed(frozenset({"SOL"}))
        clock.now += NOTICE_SETTLE_S
        await tick(quotes)
        assert prices.calls == 3  # only the quote on SOL again, once
        assert all(s.frames[-1]["price"] == "151" and len(s.frames) == 2 for s in sockets)
        assert len(other.frames) == 1

    asyncio.run(scenario())


def test_notices_between_two_ticks_are_coalesced_and_an_unchanged_quote_is_not_sent_again():
    async def scenario():
        prices, clock = Prices(), Clock()
        quotes = stream(prices, clock)
        socket = Socket()
        quotes.subscribe(socket, request())
        await tick(quotes)
        for _ in range(50):  # a burst of swaps
            quotes.pools_changed(frozenset({"SOL", "USDC"}))
        await tick(quotes)  # too early: the simulator's quote cache may predate the swap
        assert prices.calls == 1
        clock.now += NOTICE_SETTLE_S
        await tick(quotes)
        await tick(quotes)
        assert prices.calls == 2  # fifty notices, one computation
        assert len(socket.frames) == 1  # the price did not move: nothing sent
        clock.now += quotes.refresh_s  # no notice, but the drift's refresh is due
        await tick(quotes)
        assert prices.calls == 3

    asyncio.run(scenario())


def test_a_tick_is_skipped_while_the_last_one_computes_and_its_quotes_stay_due():
    async def scenario():
        prices, clock = Prices(), Clock()
        release = asyncio.Event()

        async def slow(fn, *args):
            await release.wait()
            return fn(*args)

        quotes = QuoteStream(prices, slow, interval_s=0.25, refresh_s=1.0, clock=clock)
        socket = Socket()
        quotes.subscribe(socket, request())
        first = quotes.tick()
        assert quotes.tick() is None  # still computing: no second computation piles up
        quotes.pools_changed(frozenset({"SOL"}))  # heard while computing: due again afterwards
        release.set()
        await first
        clock.now += NOTICE_SETTLE_S
        await tick(quotes)
        assert prices.calls == 2

    asyncio.run(scenario())


def test_a_late_subscriber_gets_the_last_quote_at_once_and_a_refusal_is_an_error_frame():
    async def scenario():
        prices, clock = Prices(), Clock()
        quotes = stream(prices, clock)
        quotes.subscribe(Socket(), request())
        refused = Socket()
        refused_id = quotes.subscribe(refused, request("SOL", "BONK", "1"))
        await tick(quotes)
        assert refused.frames == [{"type": "error", "subscriptionId": refused_id,
                                   "error": {"code": "no_route", "message": "no venue can fill this order"}}]
        late = Socket()
        late_id = quotes.subscribe(late, request())
        quotes.send_last(late, late_id)
        assert late.frames[0]["subscriptionId"] == late_id and late.frames[0]["price"] == "150"
        assert prices.calls == 2

    asyncio.run(scenario())


def test_subscriptions_are_bounded_per_connection_and_end_with_it():
    prices, clock = Prices(), Clock()
    quotes = stream(prices, clock)
    socket, other = Socket(), Socket()
    ids = [quotes.subscribe(socket, request(amount=str(i + 1))) for i in range(MAX_QUOTE_SUBSCRIPTIONS)]
    assert len(set(ids)) == MAX_QUOTE_SUBSCRIPTIONS
    with pytest.raises(ValidationError):
        quotes.subscribe(socket, request())
    quotes.subscribe(other, request(amount="1"))
    assert quotes.unsubscribe(socket, ids[0]) and not quotes.unsubscribe(socket, ids[0])
    assert not quotes.unsubscribe(other, ids[1])  # another connection's id is not its own
    quotes.subscribe(socket, request())  # room again
    quotes.detach(socket)
    assert quotes.subscription_count == 1 and quotes.topic_count == 1  # only the other's quote is left


def test_a_pools_notice_on_the_bus_reaches_the_stream():
    async def scenario():
        prices, clock = Prices(), Clock()
        bus = InProcessBus()
        quotes = stream(prices, clock, bus=bus)
        quotes.start()
        try:
            quotes.subscribe(Socket(), request())
            await tick(quotes)
            bus.publish_control({"topic": "halts"})  # another topic: ignored
            bus.publish_control(pools_changed("raydium", ["USDC", "JUP"]))
            for _ in range(200):
                if quotes.due(clock.now + NOTICE_SETTLE_S):
                    break
                await asyncio.sleep(0.005)
            assert quotes.due(clock.now + NOTICE_SETTLE_S)
        finally:
            quotes.stop()
            bus.close()

    asyncio.run(scenario())


def test_a_frame_is_the_body_encoded_once_with_the_subscription_id_in_front():
    assert json.loads(frame("quote", "q7", b'{"a":1}')) == {"type": "quote", "subscriptionId": "q7", "a": 1}
    assert json.loads(frame("error", "q1", b'{"code":"x"}')) == {"type": "error", "subscriptionId": "q1",
                                                                "error": {"code": "x"}}
