"""The simulator's arithmetic: constant-product swaps, fees, impact, quote curves, arbitrage,
drift, and base58."""
from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from storage.venues.base import VenueError
from storage.venues.curve import ConstantProductCurve
from storage.venues.sim import amm
from storage.venues.sim.base58 import b58decode, b58encode, is_valid_signature, new_signature

SOL = 10**9
POOL = (40_000 * SOL, 6_000_000 * 10**6)  # 40k SOL / 6M USDC


def test_output_grows_with_order_size():
    outs = [amm.swap_out(*POOL, n * SOL, 25).amount_out for n in (1, 2, 5, 10, 100, 1000)]
    assert outs == sorted(outs) and len(set(outs)) == len(outs)


def test_price_impact_grows_with_order_size_and_is_small_for_ten_sol():
    impacts = [amm.swap_out(*POOL, n * SOL, 25).price_impact_bps for n in (1, 10, 100, 1000, 10_000)]
    assert impacts == sorted(impacts)
    assert impacts[1] <= 5  # 10 SOL in a $12M pool
    assert impacts[-1] > 1000  # a quarter of the pool


def test_fee_is_taken_from_the_input_rounded_up_and_the_rest_is_swapped():
    assert amm.fee_for(1000, 25) == 3  # 2.5 rounds up
    assert amm.fee_for(10_000, 25) == 25
    result = amm.swap_out(1_000_000, 2_000_000, 10_000, 25)
    net = 10_000 - 25
    assert result.fee_amount == 25
    assert result.amount_out == net * 2_000_000 // (1_000_000 + net)
    assert (result.reserve_in, result.reserve_out) == (1_010_000, 2_000_000 - result.amount_out)


def test_a_higher_fee_gives_less_output():
    assert amm.swap_out(*POOL, SOL, 20).amount_out > amm.swap_out(*POOL, SOL, 30).amount_out


def test_amounts_stay_exact_integers_beyond_float_precision():
    reserve = 2**62 + 12345  # no float can hold this exactly
    result = amm.swap_out(reserve, reserve, 10**15 + 1, 25)
    assert all(isinstance(v, int) for v in (result.amount_out, result.fee_amount, result.reserve_in))
    assert result.reserve_in == reserve + 10**15 + 1
    assert result.reserve_out + result.amount_out == reserve


@given(
    reserve_in=st.integers(10**6, 10**18),
    reserve_out=st.integers(10**6, 10**18),
    share=st.floats(1e-9, 1.0),
    fee_bps=st.sampled_from([20, 25, 30]),
)
def test_a_swap_never_lowers_the_pool_product_nor_beats_the_spot_price(reserve_in, reserve_out, share, fee_bps):
    amount_in = max(1, int(reserve_in * share))
    try:
        result = amm.swap_out(reserve_in, reserve_out, amount_in, fee_bps)
    except VenueError as error:
        assert error.code == "insufficient_liquidity"
        return
    assert result.reserve_in * result.reserve_out >= reserve_in * reserve_out
    assert 0 < result.amount_out <= amount_in * reserve_out // reserve_in
    assert 0 <= result.price_impact_bps <= amm.BPS


def test_an_order_larger_than_the_pool_or_too_small_to_buy_anything_is_refused():
    with pytest.raises(VenueError) as large:
        amm.swap_out(*POOL, POOL[0] + 1, 25)
    with pytest.raises(VenueError) as tiny:
        amm.swap_out(10**16, 10**3, 1000, 25)  # BONK-like dust for a few base units
    assert large.value.code == tiny.value.code == "insufficient_liquidity"


def test_drifted_reserves_keep_the_product_and_scale_the_price_by_m():
    drift = amm.drift_for("7", "raydium", "SOL", "USDC")
    for t in (0, 1_000, 1_700_000_000.5):
        root = drift.root(t)
        eff_a, eff_b = amm.effective(*POOL, root)
        m = math.exp(drift.log_multiplier(t))
        assert (eff_b / eff_a) / (POOL[1] / POOL[0]) == pytest.approx(m, rel=1e-9)
        assert eff_a * eff_b == pytest.approx(POOL[0] * POOL[1], rel=1e-9)
        back_a, back_b = amm.stored(eff_a, eff_b, root)
        assert abs(back_a - POOL[0]) <= 1 and abs(back_b - POOL[1]) <= 1


def test_drift_is_bounded_and_a_pure_function_of_the_seed():
    times = [1_700_000_000 + 7 * i for i in range(2_000)]
    drift = amm.drift_for("7", "meteora", "SOL", "USDC")
    again = amm.drift_for("7", "meteora", "SOL", "USDC")
    other = amm.drift_for("8", "meteora", "SOL", "USDC")
    assert [drift.root(t) for t in times] == [again.root(t) for t in times]
    assert [drift.root(t) for t in times] != [other.root(t) for t in times]
    assert max(abs(drift.log_multiplier(t)) for t in times) <= amm.MAX_LOG_DRIFT + 1e-12
    periods = [p for _, p, _ in drift.waves]
    assert all(20 <= p <= 600 for p in periods)


def test_each_venue_offers_the_better_price_often_and_they_stay_within_three_percent():
    ray = amm.drift_for("7", "raydium", "SOL", "USDC")
    met = amm.drift_for("7", "meteora", "SOL", "USDC")
    times = [1_700_000_000 + 5 * i for i in range(720)]  # an hour
    gaps = [ray.log_multiplier(t) - met.log_multiplier(t) for t in times]
    raydium_better = sum(g > 0 for g in gaps) / len(gaps)
    assert 0.1 < raydium_better < 0.9
    assert max(abs(math.expm1(g)) for g in gaps) < 0.03


def test_base58_matches_known_vectors_and_round_trips():
    vectors = {
        b"": "",
        b"Hello World!": "2NEpo7TZRRrLZSi2U",
        bytes.fromhex("00eb15231dfceb60925886b67d065299925915aeb172c06647"): "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L",
        bytes(10): "1111111111",
        bytes.fromhex("572e4794"): "3EFU7m",
    }
    for raw, text in vectors.items():
        assert b58encode(raw) == text
        assert b58decode(text) == raw


@given(st.binary(max_size=80))
def test_base58_decoding_inverts_encoding(raw):
    assert b58decode(b58encode(raw)) == raw


def test_new_signatures_are_valid_distinct_and_reproducible_with_a_seeded_rng():
    sigs = {new_signature() for _ in range(50)}
    assert len(sigs) == 50 and all(is_valid_signature(s) for s in sigs)
    assert new_signature(random.Random(3)) == new_signature(random.Random(3))
    assert 86 <= len(new_signature(random.Random(3))) <= 88


@pytest.mark.parametrize("junk", ["", "abc", "0" * 88, "I" * 88, b58encode(bytes(range(63))) , None, 42])
def test_anything_but_64_base58_bytes_is_not_a_signature(junk):
    assert not is_valid_signature(junk)


@given(
    reserve_in=st.integers(10**3, 10**18),
    reserve_out=st.integers(10**3, 10**18),
    amount_in=st.integers(1, 10**19),
    fee_bps=st.sampled_from([20, 25, 30]),
)
def test_a_quote_curve_prices_every_amount_exactly_as_the_pool_swaps_it(reserve_in, reserve_out, amount_in, fee_bps):
    curve = ConstantProductCurve(reserve_in, reserve_out, fee_bps)
    try:
        landed = amm.swap_out(reserve_in, reserve_out, amount_in, fee_bps).amount_out
    except VenueError:
        landed = 0  # the venue refuses it: the curve says it buys nothing
    assert curve.out(amount_in) == landed


@given(
    reserve_in=st.integers(10**3, 10**18),
    reserve_out=st.integers(10**3, 10**18),
    share=st.floats(1e-12, 1.0),
    fee_bps=st.sampled_from([20, 25, 30]),
)
def test_the_least_input_for_an_output_is_exact(reserve_in, reserve_out, share, fee_bps):
    curve = ConstantProductCurve(reserve_in, reserve_out, fee_bps)
    wanted = max(1, int(curve.out(reserve_in) * share))
    least = curve.min_in(wanted)
    if least is None:
        assert curve.out(reserve_in) < wanted
        return
    assert curve.out(least) >= wanted > curve.out(least - 1)


def test_arbitrage_halves_the_gap_to_the_reference_price_every_half_life():
    reference = math.log(POOL[1] / POOL[0])
    pushed = (POOL[0] * 11 // 10, POOL[1] * 10 // 11)  # the price ~17% below the reference
    gap = math.log(pushed[1] / pushed[0]) - reference
    for half_lives in (0.5, 1, 3):
        root = amm.relax_root(*pushed, reference, half_lives * amm.ARBITRAGE_HALF_LIFE_S)
        relaxed = amm.effective(*pushed, root)
        assert math.log(relaxed[1] / relaxed[0]) - reference == pytest.approx(gap / 2**half_lives, rel=1e-9)
        assert relaxed[0] * relaxed[1] == pytest.approx(pushed[0] * pushed[1], rel=1e-9)


def test_arbitrage_leaves_a_pool_alone_when_no_time_passed():
    pushed = (POOL[0] * 2, POOL[1] // 2)
    assert amm.relax_root(*pushed, math.log(POOL[1] / POOL[0]), 0.0) == amm.ROOT_SCALE
    assert amm.relax_root(*pushed, math.log(POOL[1] / POOL[0]), -3.0) == amm.ROOT_SCALE  # a clock behind the row
    assert amm.effective(*pushed, amm.ROOT_SCALE) == pushed


def test_the_reference_price_is_the_ratio_of_usd_prices_in_base_units():
    log_price = amm.log_reference(Decimal("150"), Decimal("1"), 9, 6)  # SOL/USDC
    assert math.exp(log_price) == pytest.approx(150 * 10**6 / 10**9, rel=1e-12)
