"""Pre-trade risk limits per owner: the limits, how an order is valued, and the decisions.

Domain logic, no database. Three limits, each 0 for none (the default, so an engine without
them configured behaves and costs as before):

- `maxOrderUsd`: the largest order, valued in USDC at the reference price (`value_usd`).
  Decided from the order alone, before storage (`screen`).
- `maxOpenOrders`: most orders open at once (pending, waiting, routing, building, submitted).
- `maxNotional24hUsd`: most value accepted in any 24 h; cancelled and expired orders give
  theirs back (they end before any swap is sent), failed ones do not (a split order may have
  filled a leg before it failed).

The last two are decided by `RiskBook` inside the transaction that inserts the batch, under a
lock per owner, from figures the store keeps (storage/risk_sql.py). Amounts are counted in
integer micro-USD (USDC's base unit): exact on Postgres and SQLite alike, rounded up, so a
figure is never below the truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_UP, Decimal
from typing import Callable

from config import Settings, find_token
from storage.errors import StorageError
from storage.records import OrderDraft, decimal_str
from storage.venues.collar import PriceOracle

MICROS = 10 ** 6  # micro-USD per USD


@dataclass(frozen=True)
class RiskLimits:
    """An owner's limits; 0 means no limit."""

    max_order_usd: Decimal = Decimal(0)
    max_open_orders: int = 0
    max_notional_24h_usd: Decimal = Decimal(0)

    @property
    def any(self) -> bool:
        """True when at least one limit applies."""
        return bool(self.max_order_usd or self.max_open_orders or self.max_notional_24h_usd)

    @property
    def in_usd(self) -> bool:
        """True when a limit needs the order's USD value."""
        return bool(self.max_order_usd or self.max_notional_24h_usd)

    @property
    def kept(self) -> bool:
        """True when a limit needs figures kept in the database (decided under the owner's lock)."""
        return bool(self.max_open_orders or self.max_notional_24h_usd)


NO_LIMITS = RiskLimits()

# Who may place what: an owner's limits (the provider is handed to the web's Services).
LimitsProvider = Callable[[str], RiskLimits]
_LIMIT_FIELDS = {"maxOrderUsd": "max_order_usd", "maxOpenOrders": "max_open_orders",
                 "maxNotional24hUsd": "max_notional_24h_usd"}


class KeyLimits:
    """The provider where keys are managed: an owner's limits are the settings' defaults, each
    replaced by the one its managed key gives (`limits` of its newest live key; "0" lifts it).

    Called on the intake's thread, once per owner of a batch: the database is asked again at
    most every `ttl_s` per owner (a key's new limits apply within that), and never for the
    owner "" (no keys)."""

    def __init__(self, limits_of: Callable[[str], dict], defaults: RiskLimits, ttl_s: float = 2.0,
                 clock: Callable[[], float] | None = None, max_owners: int = 10_000):
        import time

        self._limits_of = limits_of
        self._defaults = defaults
        self._ttl_s = ttl_s
        self._clock = clock or time.monotonic
        self._max_owners = max_owners
        self._known: dict[str, tuple[float, RiskLimits]] = {}

    def __call__(self, owner: str) -> RiskLimits:
        if not owner:
            return self._defaults
        now = self._clock()
        known = self._known.get(owner)
        if known is not None and now - known[0] < self._ttl_s:
            return known[1]
        stored = self._limits_of(owner)
        limits = self._defaults
        if stored:
            given = {_LIMIT_FIELDS[name]: (int(value) if name == "maxOpenOrders" else Decimal(str(value)))
                     for name, value in stored.items() if name in _LIMIT_FIELDS}
            limits = RiskLimits(**{**self._defaults.__dict__, **given})
        if len(self._known) >= self._max_owners:
            self._known.clear()
        self._known[owner] = (now, limits)
        return limits


def default_limits(settings: Settings) -> LimitsProvider:
    """The provider giving every owner (`""` too, where no keys are configured) the settings' limits."""
    limits = RiskLimits(settings.risk_max_order_usd, settings.risk_max_open_orders,
                        settings.risk_max_notional_24h_usd)
    return lambda owner: limits


class RiskLimitExceeded(StorageError):
    """An order refused by a risk limit: nothing of it is stored.

    `limit` names the limit (`maxOrderUsd`, ...), `value` is the limit as configured, and
    `figures` the order's figures behind the refusal (`orderValue`, `openOrders`, ...).
    """

    def __init__(self, limit: str, value: str | int, message: str, field: str | None = None,
                 figures: dict[str, str | int] | None = None):
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.message = message
        self.field = field
        self.figures = figures or {}


@dataclass(frozen=True)
class RiskTicket:
    """What the store needs to decide an order's kept limits: its owner's limits and its value
    (micro-USD, None when not needed)."""

    limits: RiskLimits
    value_micros: int | None


def spent_amount(draft: OrderDraft) -> Decimal:
    """How much tokenIn the order will ever sell: its amount, but a dca's `amount` is one purchase
    of `count` (its `totalAmount` when it gave one). A parent is valued at all its children will
    spend, so its children are not counted again and cannot pass a limit between them."""
    schedule = draft.schedule or {}
    if draft.type != "dca" or "count" not in schedule:
        return draft.amount
    if "totalAmount" in schedule:
        return Decimal(schedule["totalAmount"])
    return draft.amount * schedule["count"]


def value_usd(draft: OrderDraft, oracle: PriceOracle) -> Decimal | None:
    """The order's value in USDC at the reference price (of all it will sell: `spent_amount`): its
    tokenIn side, else (a limit order whose tokenIn has no reference price) its tokenOut side at
    the limit price; None when it cannot be valued."""
    amount = spent_amount(draft)
    usdc, token_in = find_token("USDC"), find_token(draft.token_in)
    price = oracle.reference_price(token_in, usdc) if token_in is not None else None
    if price is not None:
        return amount * price
    token_out = find_token(draft.token_out)
    if draft.limit_price is not None and token_out is not None:
        price = oracle.reference_price(token_out, usdc)
        if price is not None:
            return amount * draft.limit_price * price
    return None


def micros(usd: Decimal) -> int:
    """USD to whole micro-USD, rounded up."""
    return int((usd * MICROS).to_integral_value(rounding=ROUND_CEILING))


def usd_text(value_micros: int) -> str:
    """Micro-USD as the API shows an amount of USD: cents, rounded up ("1520.50")."""
    return str((Decimal(value_micros) / MICROS).quantize(Decimal("0.01"), rounding=ROUND_UP))


def _who(owner: str) -> str:
    return "this key" if owner else "an owner"


def screen(draft: OrderDraft, limits: RiskLimits, oracle: PriceOracle) -> RiskTicket | RiskLimitExceeded:
    """What can be decided from the order alone: its value, and `maxOrderUsd`. The ticket the
    store decides the rest with, or the refusal."""
    value = value_usd(draft, oracle) if limits.in_usd else None
    if limits.in_usd and value is None:
        name, limit = (("maxOrderUsd", limits.max_order_usd) if limits.max_order_usd
                       else ("maxNotional24hUsd", limits.max_notional_24h_usd))
        return RiskLimitExceeded(
            name, decimal_str(limit), f"the order cannot be valued in USDC (no reference price for "
            f"{draft.token_in} or {draft.token_out}) and {_who(draft.owner)} has a limit in USD ({name} "
            f"{decimal_str(limit)}): it is refused", "tokenIn")
    value_micros = micros(value) if value is not None else None
    if limits.max_order_usd and value_micros > micros(limits.max_order_usd):
        limit = decimal_str(limits.max_order_usd)
        return RiskLimitExceeded(
            "maxOrderUsd", limit, f"the order is worth {usd_text(value_micros)} USDC; {_who(draft.owner)} may "
            f"place at most {limit} USDC per order", "amount", {"orderValue": usd_text(value_micros)})
    return RiskTicket(limits, value_micros)


class RiskBook:
    """The kept figures of a batch's owners, read under their locks, and the batch's orders
    decided one by one in arrival order: each accepted one adds to its owner's figures, so a
    refused one spoils nothing for the others."""

    def __init__(self, open_orders: dict[str, int], notional_micros: dict[str, int]):
        self.open_orders = dict(open_orders)
        self.notional_micros = dict(notional_micros)

    def admit(self, owner: str, ticket: RiskTicket) -> RiskLimitExceeded | None:
        """Count the order in and return None, or return why it is refused (counting nothing)."""
        limits = ticket.limits
        open_now = self.open_orders.get(owner, 0)
        if limits.max_open_orders and open_now >= limits.max_open_orders:
            return RiskLimitExceeded(
                "maxOpenOrders", limits.max_open_orders, f"{_who(owner)} has {open_now} orders open (pending to "
                f"submitted) and may have at most {limits.max_open_orders} open at once",
                figures={"openOrders": open_now})
        used = self.notional_micros.get(owner, 0)
        if limits.max_notional_24h_usd and used + ticket.value_micros > micros(limits.max_notional_24h_usd):
            limit = decimal_str(limits.max_notional_24h_usd)
            return RiskLimitExceeded(
                "maxNotional24hUsd", limit, f"the order is worth {usd_text(ticket.value_micros)} USDC and "
                f"{_who(owner)}'s orders of the last 24 h are worth {usd_text(used)} USDC; at most {limit} USDC "
                f"per 24 h", "amount", {"orderValue": usd_text(ticket.value_micros), "notional24hUsd": usd_text(used)})
        if limits.max_open_orders:
            self.open_orders[owner] = open_now + 1
        if limits.max_notional_24h_usd:
            self.notional_micros[owner] = used + ticket.value_micros
        return None


def counted(ticket: RiskTicket | None) -> tuple[int, int | None]:
    """What an accepted order adds to the kept figures, stored on its row so that its end can
    take it back: (1 when it counts as open else 0, its micro-USD when it counts in the
    24 h notional else None)."""
    if ticket is None:
        return 0, None
    return (1 if ticket.limits.max_open_orders else 0,
            ticket.value_micros if ticket.limits.max_notional_24h_usd else None)
