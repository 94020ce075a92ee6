"""Streamed quotes over a real WebSocket, on the embedded storage (SQLite + in-process bus)."""
from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

from openapi_schema_validator import OAS31Validator
from tornado.testing import gen_test

from config import find_token
from storage.pool_notices import pools_changed
from storage.venues.base import SwapRequest
from tests.integration.test_web import WebTestCase
from web.quote_stream import MAX_QUOTE_SUBSCRIPTIONS

SUBSCRIBE = {"action": "subscribeQuote", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5"}


class QuoteStreamTest(WebTestCase):
    # Ticks every 20 ms; no refresh within a test: a frame after the first comes from a notice.
    env = {"QUOTE_STREAM_INTERVAL_MS": "20", "QUOTE_STREAM_REFRESH_MS": "600000", "VENUE_FAILURE_RATE": "0",
           "VENUE_TIMEOUT_RATE": "0"}

    async def command(self, conn, frame):
        await conn.write_message(json.dumps(frame))
        return await self.frame(conn)

    def swap(self, dex, token_in, token_out, amount):
        """Play a worker: land a swap on the chain and announce the moved pools, as its gateway does."""
        t_in, t_out = find_token(token_in), find_token(token_out)
        request = SwapRequest(f"sig-{uuid.uuid4().hex}", str(uuid.uuid4()), dex, t_in, t_out,
                              t_in.to_base(Decimal(amount)), 1)
        assert self.storage.chain.venue(dex).execute_swap(request).status == "confirmed"
        self.storage.bus.publish_control(pools_changed(dex, [token_in, token_out]))

    @gen_test
    async def test_a_subscriber_gets_the_quote_body_then_the_new_quote_once_a_swap_moves_its_pool(self):
        conn = await self.connect("/ws")
        subscribed = await self.command(conn, SUBSCRIBE)
        assert subscribed == {"type": "quoteSubscribed", "subscriptionId": "q1", "tokenIn": "SOL",
                              "tokenOut": "USDC", "amount": "1.5", "slippageBps": 50}
        first = await self.frame(conn)
        status, rest = await self.call("/api/quote?tokenIn=SOL&tokenOut=USDC&amount=1.5")
        assert status == 200
        assert (first["type"], first["subscriptionId"]) == ("quote", "q1")
        assert set(first) - {"type", "subscriptionId"} == set(rest)  # GET /api/quote's body
        assert (first["amountIn"], first["slippageBps"], set(first["quotes"])) == ("1.5", 50, {"raydium", "meteora"})
        before = Decimal(first["quotes"]["raydium"]["amountOut"])
        self.swap("raydium", "SOL", "USDC", "500")  # sells SOL: SOL is worth less USDC there
        moved = await self.frame(conn)
        assert moved["subscriptionId"] == "q1" and Decimal(moved["quotes"]["raydium"]["amountOut"]) < before
        second = await self.connect("/ws")  # a late subscriber of the same quote: its last answer at once
        assert (await self.command(second, SUBSCRIBE))["subscriptionId"] == "q1"
        assert (await self.frame(second))["quotes"] == moved["quotes"]
        assert self.services.quotes.topic_count == 1 and self.services.quotes.subscription_count == 2
        unsubscribed = await self.command(conn, {"action": "unsubscribeQuote", "subscriptionId": "q1"})
        assert unsubscribed == {"type": "quoteUnsubscribed", "subscriptionId": "q1"}
        _, document = await self.call("/api/openapi.json")  # the frames as the document describes them
        for name, frame in (("SubscribeQuoteCommand", SUBSCRIBE), ("QuoteSubscribedFrame", subscribed),
                            ("QuoteFrame", first), ("QuoteFrame", moved), ("QuoteUnsubscribedFrame", unsubscribed)):
            OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]}).validate(
                frame)
        second.close()
        for _ in range(500):  # the server sees the close
            if not self.services.quotes.subscription_count:
                break
            await asyncio.sleep(0.01)
        assert self.services.quotes.topic_count == 0

    @gen_test
    async def test_a_bad_quote_subscription_gets_an_error_frame_and_the_connection_stays_open(self):
        conn = await self.connect("/ws")
        refusals = [
            ({**SUBSCRIBE, "tokenOut": "NOPE"}, "unknown_token", "tokenOut"),
            ({**SUBSCRIBE, "tokenOut": "SOL"}, "same_token", "tokenOut"),
            ({k: v for k, v in SUBSCRIBE.items() if k != "amount"}, "missing_field", "amount"),
            ({**SUBSCRIBE, "amount": "-1"}, "invalid_amount", "amount"),
            ({**SUBSCRIBE, "amount": "0.0000000001"}, "too_many_decimals", "amount"),
            ({**SUBSCRIBE, "slippageBps": 0}, "invalid_field", "slippageBps"),
            ({**SUBSCRIBE, "side": "buy"}, "unknown_field", "side"),
            ({**SUBSCRIBE, "action": "quote"}, "invalid_field", "action"),
            ({**SUBSCRIBE, "tokenOut": "POPCAT"}, "invalid_field", "tokenOut"),  # not launched yet
            ({"action": "unsubscribeQuote", "subscriptionId": 7}, "invalid_field", "subscriptionId"),
        ]
        for command, code, field in refusals:
            answer = await self.command(conn, command)
            assert answer["type"] == "error" and (answer["error"]["code"], answer["error"].get("field")) == (
                code, field), (command, answer)
        assert self.services.quotes.subscription_count == 0  # nothing was kept for any of them
        for n in range(MAX_QUOTE_SUBSCRIPTIONS):  # a JSON number amount is read exactly, as in a submit
            answer = await self.command(conn, {**SUBSCRIBE, "amount": n + 1})
            while answer["type"] == "quote":
                answer = await self.frame(conn)
            assert answer["type"] == "quoteSubscribed" and answer["amount"] == str(n + 1), answer
        await conn.write_message(json.dumps(SUBSCRIBE))
        while (answer := await self.frame(conn))["type"] == "quote":
            pass
        assert (answer["type"], answer["error"]["field"]) == ("error", "action")  # over the cap
        assert self.services.quotes.subscription_count == MAX_QUOTE_SUBSCRIPTIONS


class QuoteStreamLimitsTest(WebTestCase):
    env = {"SUBSCRIBE_RATE_LIMIT": "2", "RATE_WINDOW_SECONDS": "30"}

    @gen_test
    async def test_subscribe_quote_frames_count_against_the_subscribe_rate_limit(self):
        conn = await self.connect("/ws")
        kinds = []
        for _ in range(3):
            await conn.write_message(json.dumps(SUBSCRIBE))
            while (answer := await self.frame(conn))["type"] == "quote":
                pass
            kinds.append(answer["type"] if answer["type"] != "error" else answer["error"]["code"])
        assert kinds == ["quoteSubscribed", "quoteSubscribed", "rate_limited"]
