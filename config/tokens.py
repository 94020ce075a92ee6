"""The tokens the engine trades, with their real Solana mainnet mints and decimals."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

NATIVE_SOL_MINT = "So11111111111111111111111111111111111111111"


@dataclass(frozen=True)
class Token:
    """One SPL token: its symbol, mint address and decimals."""

    symbol: str
    mint: str
    decimals: int
    tradable: bool = True
    usd_price: Decimal = Decimal(0)  # reference price the simulated pools start from

    @property
    def base(self) -> int:
        """Base units per whole token (10 ** decimals)."""
        return 10 ** self.decimals

    def to_base(self, amount: Decimal) -> int:
        """Whole-token amount to base units; the caller has checked the decimals."""
        return int(amount.scaleb(self.decimals))

    def to_whole(self, base_units: int) -> Decimal:
        """Base units to an exact whole-token Decimal."""
        return Decimal(base_units).scaleb(-self.decimals)


TOKENS: tuple[Token, ...] = (
    # SOL is traded as wrapped SOL (the mint below); the native-SOL pseudo mint is accepted too.
    Token("SOL", "So11111111111111111111111111111111111111112", 9, usd_price=Decimal("150")),
    Token("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6, usd_price=Decimal("1")),
    Token("USDT", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6, usd_price=Decimal("1")),
    Token("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5, usd_price=Decimal("0.00002")),
    Token("JUP", "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN", 6, usd_price=Decimal("0.8")),
    Token("RAY", "4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R", 6, usd_price=Decimal("2.5")),
    Token("WIF", "EKpQGSJtjMFqKZ9KQanSqYXRcF8fBopzLHYxdM65zcjm", 6, usd_price=Decimal("1.6")),
    # Not tradable until launched on the simulated chain (POST /api/sim/launch): for sniper
    # orders. Each launches once per database; there are several, so a test suite or a demo
    # does not run out. Real mainnet mints and decimals (MEW has 5; the pump.fun launches,
    # whose mints end in "pump", have 6), as independent token lists agree.
    Token("POPCAT", "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr", 9, tradable=False, usd_price=Decimal("0.5")),
    Token("MEW", "MEW1gQWJ3nEXg2qgERiKu7FAFj79PHvQVREQUzScPP5", 5, tradable=False, usd_price=Decimal("0.004")),
    Token("BOME", "ukHH6c7mMyiWCf1b9pnWe25TSpkDDt3H5pQZgZ74J82", 6, tradable=False, usd_price=Decimal("0.002")),
    Token("PNUT", "2qEHjDLDLbuBgRYvsxhc5D6uDWAivNFZGan56P1tpump", 6, tradable=False, usd_price=Decimal("0.2")),
    Token("GOAT", "CzLSujWBLFsSjncfkh59rUFqvafWcY5tzedWJSuypump", 6, tradable=False, usd_price=Decimal("0.08")),
    Token("MOODENG", "ED5nyyWEzpPPiWimP8vYm7sD7TD3LAt3Q3gRTWHzPJBY", 6, tradable=False, usd_price=Decimal("0.1")),
    Token("FWOG", "A8C3xuqscfmyLrte3VmTqrAq8kgMASius9AFNANwpump", 6, tradable=False, usd_price=Decimal("0.04")),
)

_BY_SYMBOL = {t.symbol: t for t in TOKENS}
_BY_MINT = {t.mint: t for t in TOKENS}
_BY_MINT[NATIVE_SOL_MINT] = _BY_SYMBOL["SOL"]


def find_token(name: str) -> Token | None:
    """The token named by a symbol (any case) or a mint address, or None."""
    return _BY_MINT.get(name) or _BY_SYMBOL.get(name.upper())
