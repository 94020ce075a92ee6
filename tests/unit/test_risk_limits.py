"""Risk limits as domain logic: valuation, the per-order decisions and what an ended order gives
back, without a database (storage/risk.py, storage/risk_sql.py's pure parts)."""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from config import load_settings
from storage.records import OrderDraft
from storage.risk import (NO_LIMITS, RiskBook, RiskLimitExceeded, RiskLimits, RiskTicket, counted, default_limits,
                          micros, screen, usd_text, value_usd)
from storage.risk_sql import WINDOW_MINUTES, epoch_minute, lock_key, releases
from storage.venues.collar import PriceOracle, SimulatorReferencePrices

ORACLE = SimulatorReferencePrices()  # SOL 150, USDC 1, BONK 0.00002, POPCAT 0.5 USD


class Unpriced(PriceOracle):
    """An oracle that knows no price for some tokens (a token not launched, a feed down)."""

    def __init__(self, *unknown: str):
        self.unknown = set(unknown)

    def reference_price(self, token_in, token_out):
        if token_in.symbol in self.unknown or token_out.symbol in self.unknown:
            return None
        return ORACLE.reference_price(token_in, token_out)


def draft(**kw) -> OrderDraft:
    return OrderDraft(**{"token_in": "SOL", "token_out": "USDC", "amount": Decimal("1.5"), **kw})


def test_an_order_is_valued_in_usdc_by_its_token_in_at_the_reference_price():
    assert value_usd(draft(), ORACLE) == Decimal("225")
    assert value_usd(draft(token_in="USDC", token_out="SOL", amount=Decimal("10.25")), ORACLE) == Decimal("10.25")
    assert value_usd(draft(token_in="BONK", amount=Decimal("1000000")), ORACLE) == Decimal("20")


def test_a_token_in_without_reference_price_is_valued_by_its_token_out_at_the_limit_price_or_not_at_all():
    oracle = Unpriced("POPCAT")
    limit = draft(token_in="POPCAT", token_out="USDC", amount=Decimal("100"), type="limit",
                  limit_price=Decimal("0.6"))
    assert value_usd(limit, oracle) == Decimal("60")  # at least 60 USDC out
    assert value_usd(draft(token_in="POPCAT", token_out="SOL", amount=Decimal("100"), type="limit",
                           limit_price=Decimal("0.01")), oracle) == Decimal("150")
    assert value_usd(draft(token_in="POPCAT", amount=Decimal("100")), oracle) is None  # a market order: no price
    assert value_usd(draft(token_in="POPCAT", token_out="SOL", type="sniper"), Unpriced("POPCAT", "SOL")) is None


def test_micro_usd_round_up_and_usd_is_shown_in_cents_rounded_up():
    assert micros(Decimal("0.0000001")) == 1 and micros(Decimal("1520.5")) == 1_520_500_000
    assert usd_text(1_520_500_000) == "1520.50" and usd_text(1) == "0.01" and usd_text(0) == "0.00"


def test_no_limit_is_the_default_and_the_provider_gives_every_owner_the_settings_limits():
    assert default_limits(load_settings({}, dotenv=None))("") == NO_LIMITS and not NO_LIMITS.any
    provider = default_limits(load_settings({"RISK_MAX_OPEN_ORDERS": "3"}, dotenv=None))
    assert provider("a") == provider("") == RiskLimits(max_open_orders=3)
    assert provider("a").kept and not provider("a").in_usd


def test_an_order_worth_more_than_max_order_usd_is_refused_with_its_figures():
    refusal = screen(draft(amount=Decimal("10.137")), RiskLimits(max_order_usd=Decimal("1000")), ORACLE)
    assert isinstance(refusal, RiskLimitExceeded)
    assert (refusal.limit, refusal.value, refusal.field, refusal.figures) == (
        "maxOrderUsd", "1000", "amount", {"orderValue": "1520.55"})
    assert refusal.message == "the order is worth 1520.55 USDC; an owner may place at most 1000 USDC per order"
    exactly = screen(draft(amount=Decimal("10"), owner="k"), RiskLimits(max_order_usd=Decimal("1500")), ORACLE)
    assert exactly == RiskTicket(RiskLimits(max_order_usd=Decimal("1500")), 1_500_000_000)  # at the limit: passes


def test_an_order_that_cannot_be_valued_is_refused_only_where_a_usd_limit_applies():
    market = draft(token_in="POPCAT", amount=Decimal("100"))
    refusal = screen(market, RiskLimits(max_notional_24h_usd=Decimal("50")), Unpriced("POPCAT"))
    assert isinstance(refusal, RiskLimitExceeded) and refusal.limit == "maxNotional24hUsd"
    assert refusal.value == "50" and "cannot be valued" in refusal.message and refusal.figures == {}
    assert screen(market, RiskLimits(max_open_orders=2), Unpriced("POPCAT")) == RiskTicket(
        RiskLimits(max_open_orders=2), None)


def test_the_book_decides_a_batch_in_order_and_a_refused_order_spoils_nothing_for_the_others():
    limits = RiskLimits(max_open_orders=3, max_notional_24h_usd=Decimal("1000"))
    book = RiskBook({"a": 1}, {"a": 600_000_000})
    big, small = RiskTicket(limits, 500_000_000), RiskTicket(limits, 100_000_000)
    refusal = book.admit("a", big)  # 600 + 500 > 1000
    assert refusal.limit == "maxNotional24hUsd" and refusal.figures == {"orderValue": "500.00",
                                                                        "notional24hUsd": "600.00"}
    assert book.admit("a", small) is None and book.admit("a", small) is None  # 2 then 3 open, 800 USD
    refusal = book.admit("a", small)
    assert (refusal.limit, refusal.value, refusal.figures) == ("maxOpenOrders", 3, {"openOrders": 3})
    assert book.admit("b", big) is None  # another owner has figures of its own
    assert (book.open_orders, book.notional_micros) == ({"a": 3, "b": 1}, {"a": 800_000_000, "b": 500_000_000})


def test_an_order_counts_only_in_the_figures_whose_limit_applies():
    assert counted(None) == (0, None)
    assert counted(RiskTicket(RiskLimits(max_open_orders=1), 5)) == (1, None)
    assert counted(RiskTicket(RiskLimits(max_notional_24h_usd=Decimal(1)), 5)) == (0, 5)
    assert counted(RiskTicket(RiskLimits(max_order_usd=Decimal(1), max_open_orders=2), 5)) == (1, None)


def test_an_ended_order_frees_its_open_slot_and_only_a_cancelled_or_expired_one_gives_its_value_back():
    now = datetime(2026, 12, 4, 12, 0, 30)
    minute = epoch_minute(now)
    ended = [("a", 1, 100, now, True), ("a", 1, 50, now, False), ("b", 0, 7, now - timedelta(minutes=3), True),
             ("b", 1, None, now, False), ("c", 0, 9, now - timedelta(hours=24), True)]  # c's minute is leaving
    opened, used = releases(ended, now)
    assert opened == [("a", -2), ("b", -1)]
    assert used == [("a", minute, -100), ("b", minute - 3, -7)]


def test_the_window_is_24_hours_of_minutes_and_owner_locks_are_stable_32_bit_keys():
    assert WINDOW_MINUTES == 24 * 60
    assert epoch_minute(datetime(1970, 1, 1, 0, 2, 59)) == 2
    assert lock_key("a") == lock_key("a") != lock_key("b") and -2 ** 31 <= lock_key("") < 2 ** 31


def test_a_managed_key_s_limits_replace_the_defaults_one_by_one_and_are_read_again_after_the_ttl():
    from decimal import Decimal

    from storage.risk import KeyLimits, RiskLimits

    stored = {"desk": {"maxOrderUsd": "50"}}
    asked = []

    def limits_of(owner):
        asked.append(owner)
        return stored.get(owner, {})

    now = [0.0]
    defaults = RiskLimits(Decimal(1000), 5, Decimal(0))
    provider = KeyLimits(limits_of, defaults, ttl_s=2.0, clock=lambda: now[0])
    assert provider("desk") == RiskLimits(Decimal(50), 5, Decimal(0))
    assert provider("other") == defaults and provider("") == defaults
    assert provider("desk").max_order_usd == 50 and asked == ["desk", "other"]  # cached; "" never asked
    stored["desk"] = {"maxOrderUsd": "0", "maxOpenOrders": 1}  # "0" lifts a default
    now[0] = 2.5
    assert provider("desk") == RiskLimits(Decimal(0), 1, Decimal(0))
