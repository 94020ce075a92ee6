"""Pre-trade risk limits over the real web layer and store: each limit refuses with 422
`risk_limit` and its figures and stores nothing; the kept figures follow cancels, expiries and
terminal events; the limits hold under concurrent submits. On SQLite and on Postgres + Redis."""
from __future__ import annotations

import asyncio
import functools
import json
import threading
import uuid
from decimal import Decimal

import pytest
from tornado.testing import gen_test

from config import load_settings
from storage.database import open_database
from storage.orders import OrderStore
from storage.records import EventDraft, OrderDraft
from storage.risk import RiskLimitExceeded, RiskLimits, RiskTicket
from storage.venues.collar import PriceOracle
from tests.integration.test_access import KEY_A, KEY_B, KeyedTestCase, bearer
from tests.integration.test_web import CONFIRMED, LIFECYCLE, WebTestCase, _OnPostgresAndRedis
from web.services import Services

pytestmark = pytest.mark.integration


@functools.lru_cache(maxsize=1)
def _api():
    from openapi_core import Config, OpenAPI

    from web.openapi import openapi_document

    # Not validated again as a document (~1.4 s of CPU): tests/e2e/test_openapi.py does that.
    return OpenAPI.from_dict(json.loads(openapi_document()), config=Config(spec_validator_cls=None))


def assert_documented(answer: dict) -> None:
    """The refusal is a 422 of the submit operation as the OpenAPI document describes it."""
    from openapi_core.testing import MockRequest, MockResponse

    api = _api()
    request = MockRequest("http://localhost", "post", "/api/orders/execute")
    api.validate_response(request, MockResponse(json.dumps(answer).encode(), status_code=422,
                                                content_type="application/json"))


class _RiskTestCase(WebTestCase):
    def stored(self) -> tuple[int, tuple[int, int]]:
        """(orders stored, the owner ""'s kept figures): what a refusal must leave unchanged."""
        return self.order_count(), self.storage.orders.risk_figures("")

    async def refused(self, **fields) -> dict:
        before = self.stored()
        status, answer = await self.submit(**fields)
        assert status == 422 and answer["error"]["code"] == "risk_limit", (status, answer)
        assert self.stored() == before, "a refused order stores nothing"
        assert_documented(answer)
        return answer["error"]


class MaxOrderUsdTest(_RiskTestCase):
    env = {"RISK_MAX_ORDER_USD": "1000"}

    @gen_test
    async def test_an_order_worth_more_than_max_order_usd_is_refused_with_its_value_and_stores_nothing(self):
        error = await self.refused(amount="10.137")  # 10.137 SOL at 150 USD
        assert error == {"code": "risk_limit", "field": "amount", "limit": "maxOrderUsd", "value": "1000",
                         "orderValue": "1520.55", "message": "the order is worth 1520.55 USDC; an owner may place "
                                                             "at most 1000 USDC per order"}
        assert (await self.submit(amount="6.6"))[0] == 202  # 990 USD
        assert (await self.submit(tokenIn="USDC", tokenOut="SOL", amount="1000"))[0] == 202  # at the limit

    @gen_test
    async def test_a_websocket_submit_over_the_limit_gets_a_risk_limit_error_frame(self):
        conn = await self.connect("/api/orders/execute")
        await conn.write_message(json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "7"}))
        frames = await self.frames_until_close(conn)
        assert [f["type"] for f in frames] == ["error"] and frames[0]["error"]["limit"] == "maxOrderUsd"
        assert frames[0]["error"]["orderValue"] == "1050.00" and self.order_count() == 0

    @gen_test
    async def test_an_order_that_cannot_be_valued_is_refused_while_a_usd_limit_applies(self):
        class NoPrices(PriceOracle):
            def reference_price(self, token_in, token_out):
                return None

        self.storage.oracle = NoPrices()
        error = await self.refused(type="limit", limitPrice="100")
        assert error["limit"] == "maxOrderUsd" and "cannot be valued" in error["message"]
        assert "orderValue" not in error


class MaxOpenOrdersTest(_RiskTestCase):
    env = {"RISK_MAX_OPEN_ORDERS": "2"}

    @gen_test
    async def test_past_max_open_orders_a_submit_is_refused_and_a_cancel_frees_a_slot(self):
        first = (await self.submit(type="limit", limitPrice="1000"))[1]["orderId"]  # waits: never executes here
        assert (await self.submit(type="limit", limitPrice="1000"))[0] == 202
        error = await self.refused(type="limit", limitPrice="1000")
        assert {k: error[k] for k in ("limit", "value", "openOrders")} == {
            "limit": "maxOpenOrders", "value": 2, "openOrders": 2}
        assert "field" not in error
        self.advance(first, ("waiting", {}))
        status, order = await self.call(f"/api/orders/{first}/cancel", "POST", "")
        assert status == 200 and order["status"] == "cancelled"
        assert self.storage.orders.risk_figures("") == (1, 0)
        assert (await self.submit(type="limit", limitPrice="1000"))[0] == 202
        await self.refused()

    @gen_test
    async def test_every_terminal_status_frees_its_slot_exactly_once(self):
        ids = [(await self.submit(clientOrderId=f"o-{n}"))[1]["orderId"] for n in range(2)]
        self.advance(ids[0], *LIFECYCLE, CONFIRMED)
        self.advance(ids[1], ("failed", {"error": {"code": "no_route", "message": "none"}, "attempts": 1}))
        assert self.storage.orders.risk_figures("") == (0, 0)
        again = self.storage.orders.append_events([EventDraft(uuid.UUID(ids[1]), "cancelled", 1, {})])
        assert isinstance(again[0], Exception) and self.storage.orders.risk_figures("") == (0, 0)  # ended once
        more = [(await self.submit(expiresInSeconds=60, type="limit", limitPrice="999"))[1]["orderId"]
                for _ in range(2)]
        self.advance(more[0], ("expired", {}))
        assert self.storage.orders.risk_figures("") == (1, 0)

    @gen_test
    async def test_a_repeated_client_order_id_at_the_limit_answers_its_order_and_is_never_refused(self):
        first = await self.submit(clientOrderId="same")
        assert first[0] == 202 and (await self.submit())[0] == 202
        again = await self.submit(clientOrderId="same")
        assert again == (200, first[1])
        assert self.storage.orders.risk_figures("") == (2, 0)

    @gen_test
    async def test_submits_arriving_together_never_exceed_the_limit_and_the_rest_are_refused_alone(self):
        answers = await asyncio.gather(*(self.submit(clientOrderId=f"c-{n}") for n in range(12)))
        codes = sorted(code for code, _ in answers)
        assert codes == [202, 202] + [422] * 10, codes
        assert self.order_count() == 2 and self.storage.orders.risk_figures("") == (2, 0)


class MaxNotionalTest(_RiskTestCase):
    env = {"RISK_MAX_NOTIONAL_24H_USD": "500"}

    @gen_test
    async def test_past_the_24h_notional_a_submit_is_refused_cancelled_orders_give_theirs_back_failed_do_not(self):
        first = (await self.submit())[1]["orderId"]  # 225 USD
        second = (await self.submit())[1]["orderId"]  # 450
        error = await self.refused(amount="1")  # 150 more: 600
        assert {k: error[k] for k in ("limit", "value", "orderValue", "notional24hUsd", "field")} == {
            "limit": "maxNotional24hUsd", "value": "500", "orderValue": "150.00", "notional24hUsd": "450.00",
            "field": "amount"}
        assert (await self.call(f"/api/orders/{first}/cancel", "POST", ""))[0] == 200
        assert self.storage.orders.risk_figures("") == (0, 225_000_000)
        assert (await self.submit(amount="1"))[0] == 202  # 375
        self.advance(second, ("failed", {"error": {"code": "swap_failed", "message": "x"}, "attempts": 3}))
        assert self.storage.orders.risk_figures("")[1] == 375_000_000  # a failed order may have filled a leg
        await self.refused(amount="1")

    @gen_test
    async def test_a_cancelled_parent_keeps_its_notional_its_children_may_have_spent_it(self):
        dca = (await self.submit(type="dca", intervalSeconds=60, count=2, amount="0.5"))[1]["orderId"]  # 150 USD
        assert self.storage.orders.risk_figures("") == (0, 150_000_000)  # open orders are not limited here
        assert (await self.call(f"/api/orders/{dca}/cancel", "POST", ""))[0] == 200
        assert self.storage.orders.risk_figures("") == (0, 150_000_000), "a parent gives no notional back"
        assert (await self.submit(amount="2"))[0] == 202  # 300 more: 450
        await self.refused(amount="0.5")  # 75 more: 525


class ProviderTest(_RiskTestCase):
    """The limits come from an injected provider: per owner, whatever the settings say."""

    def get_app(self):
        from web.app import make_app

        limits = {"": RiskLimits(max_open_orders=1, max_order_usd=Decimal("300"))}
        self.services = Services(self.storage, self.engine_settings, limits_for=lambda owner: limits[owner],
                                 sweep_interval_s=0.05, idle_s=0.3)
        return make_app(self.storage, self.engine_settings, self.services)

    @gen_test
    async def test_the_provider_s_limits_apply_not_the_settings(self):
        assert (await self.refused(amount="2.1"))["limit"] == "maxOrderUsd"
        assert (await self.submit(amount="2"))[0] == 202
        assert (await self.refused(amount="0.1"))["limit"] == "maxOpenOrders"


class ScheduleRiskTest(ProviderTest):
    """Orders over time: the parent is the order its owner placed, decided once at submit."""

    @gen_test
    async def test_a_twap_is_valued_at_its_whole_amount_and_counts_as_one_open_order(self):
        twap = {"type": "twap", "durationSeconds": 60, "slices": 10}
        assert (await self.refused(amount="2.1", **twap))["limit"] == "maxOrderUsd"  # not 0.21 a slice
        assert (await self.submit(amount="2", **twap))[0] == 202
        assert (await self.refused(amount="0.1"))["limit"] == "maxOpenOrders"

    @gen_test
    async def test_a_dca_is_valued_at_all_it_will_buy_not_one_purchase(self):
        """A dca's `amount` is one purchase: valued at one, a dca of many small purchases would
        spend past every limit, its children never being counted."""
        dca = {"type": "dca", "intervalSeconds": 60, "amount": "0.5"}
        assert (await self.refused(count=5, **dca))["limit"] == "maxOrderUsd"  # 2.5 SOL, not 0.5
        assert (await self.refused(totalAmount="2.1", **dca))["limit"] == "maxOrderUsd"
        assert (await self.submit(count=4, **dca))[0] == 202  # 2 SOL: within 300 USD
        assert (await self.refused(amount="0.1"))["limit"] == "maxOpenOrders"


class PerKeyTest(KeyedTestCase):
    env = {**KeyedTestCase.env, "RISK_MAX_OPEN_ORDERS": "1"}

    @gen_test
    async def test_limits_apply_per_key_and_one_key_at_its_limit_leaves_another_unaffected(self):
        assert (await self.submit_as(KEY_A))[0] == 202
        status, answer = await self.submit_as(KEY_A)
        assert (status, answer["error"]["code"], answer["error"]["message"][:8]) == (422, "risk_limit", "this key")
        assert (await self.submit_as(KEY_B))[0] == 202
        status, page = await self.call("/api/orders", headers=bearer(KEY_A))
        assert len(page["orders"]) == 1


class MaxOrderUsdOnPostgresAndRedisTest(_OnPostgresAndRedis, MaxOrderUsdTest):
    pass


class MaxOpenOrdersOnPostgresAndRedisTest(_OnPostgresAndRedis, MaxOpenOrdersTest):
    pass


class MaxNotionalOnPostgresAndRedisTest(_OnPostgresAndRedis, MaxNotionalTest):
    pass


class PerKeyOnPostgresAndRedisTest(_OnPostgresAndRedis, PerKeyTest):
    pass


def test_concurrent_submits_from_two_processes_connections_never_exceed_the_limits_on_postgres(tmp_path, postgres_url):
    """Two stores (two web processes' connections), five threads each, submitting one order per
    transaction for one owner at once: the advisory lock per owner lets exactly the limit through."""
    settings = load_settings({"ENGINE_DATA_DIR": str(tmp_path), "DATABASE_URL": postgres_url}, dotenv=None)
    opened = [open_database(settings) for _ in range(2)]
    stores = [OrderStore(db, entities) for db, entities in opened]
    open_limit = RiskTicket(RiskLimits(max_open_orders=5), None)
    notional_limit = RiskTicket(RiskLimits(max_notional_24h_usd=Decimal("1000")), 150_000_000)
    outcomes: list = []
    start = threading.Barrier(10)

    def submit(store: OrderStore) -> None:
        start.wait()
        for _ in range(6):
            outcomes.extend(store.create_orders(
                [OrderDraft("SOL", "USDC", Decimal("1"), owner="open"), OrderDraft("SOL", "USDC", Decimal("1"),
                                                                                   owner="usd")],
                tickets=[open_limit, notional_limit]))

    threads = [threading.Thread(target=submit, args=(stores[n % 2],)) for n in range(10)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        refused = [o for o in outcomes if isinstance(o, RiskLimitExceeded)]
        others = [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, RiskLimitExceeded)]
        assert len(outcomes) == 120 and not others, others[:3]
        assert len(refused) == 120 - 5 - 6  # 5 open orders; 6 of 150 USD within 1000
        assert stores[0].risk_figures("open") == (5, 0) and stores[1].risk_figures("usd") == (0, 900_000_000)
        assert [len(stores[0].list_orders(owner, limit=500)[0]) for owner in ("open", "usd")] == [5, 6]
    finally:
        for store, (db, _) in zip(stores, opened):
            store.close()
            db.disconnect()
