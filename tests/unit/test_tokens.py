"""The token list: real mainnet mints, each token once."""
from __future__ import annotations

from config import TOKENS, find_token
from storage.venues.sim.base58 import b58decode


def test_every_token_has_its_own_symbol_and_a_mint_of_32_base58_bytes():
    assert len({t.symbol for t in TOKENS}) == len({t.mint for t in TOKENS}) == len(TOKENS)
    assert all(len(b58decode(t.mint)) == 32 for t in TOKENS)
    assert all(find_token(t.mint) is find_token(t.symbol.lower()) is t for t in TOKENS)


def test_several_tokens_are_kept_for_launches_each_with_a_reference_price():
    unlaunched = [t for t in TOKENS if not t.tradable]
    assert {"POPCAT", "MEW", "BOME", "PNUT", "GOAT", "MOODENG", "FWOG"} <= {t.symbol for t in unlaunched}
    assert all(t.usd_price > 0 for t in TOKENS)
