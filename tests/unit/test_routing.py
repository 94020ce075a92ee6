"""Route choice: the larger net output wins, the minimum rounds down, nothing usable raises."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from config import find_token
from storage.venues.base import Quote
from storage.venues.routing import choose_route, min_out

SOL, USDC = find_token("SOL"), find_token("USDC")


def quote(dex: str, amount_out: int, fee_rate: str = "0.0025") -> Quote:
    return Quote(dex, SOL, USDC, 10**9, amount_out, Decimal(fee_rate), 2_500_000, 1, datetime(2026, 1, 1))


def test_the_venue_with_the_larger_net_output_is_chosen_whatever_its_fee():
    route = choose_route([quote("raydium", 149_000_000, "0.0025"), quote("meteora", 149_500_000, "0.0030")], 50)
    assert route.best_dex == "meteora"
    assert route.amount_out == 149_500_000


def test_a_tie_goes_to_the_first_venue_listed():
    assert choose_route([quote("raydium", 5), quote("meteora", 5)], 50).best_dex == "raydium"


def test_the_minimum_output_rounds_down_to_a_base_unit():
    assert min_out(1_000_001, 50) == 995_000  # 995000.995 rounds down
    assert min_out(199, 1) == 198
    route = choose_route([quote("raydium", 1_000_001)], 50)
    assert route.min_amount_out == 995_000


def test_a_quote_of_zero_is_not_usable():
    assert choose_route([quote("raydium", 0), quote("meteora", 7)], 50).best_dex == "meteora"


@pytest.mark.parametrize("quotes", [[], [quote("raydium", 0), quote("meteora", 0)]])
def test_no_usable_quote_raises(quotes):
    with pytest.raises(ValueError):
        choose_route(quotes, 50)


def test_the_route_in_the_api_shape_uses_whole_tokens():
    api = choose_route([quote("raydium", 149_250_000)], 100).to_api()
    assert api == {
        "legs": [{"dex": "raydium", "amountIn": "1", "amountOut": "149.25"}],
        "amountOut": "149.25",
        "minAmountOut": "147.7575",
    }
