"""The spec's status rules, checked where a status is written (in the appending transaction)."""
from __future__ import annotations

LIFECYCLE = ("pending", "waiting", "routing", "building", "submitted")
TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired", "completed"})
# Orders over time (twap, dca): a parent never executes a swap itself. It goes `pending` ->
# `scheduled` (repeated: one event per settled child, with the progress) -> `completed`,
# `cancelled` or `failed`. These two names are a parent's only; a child is an ordinary order.
SCHEDULED = "scheduled"
STATUSES = frozenset(LIFECYCLE) | TERMINAL | {SCHEDULED}

# The codes a failed order (meta.error.code, the order's `error`) or a failed swap can carry:
# the execution's own, then the venues' (quotes, the simulated chain's swaps).
FAILURE_CODES = (
    "interrupted", "venue_timeout", "limit_not_met", "stale_order", "internal_error", "swap_failed",
    "transaction_expired", "venue_unavailable", "no_pool", "no_route", "unknown_token", "same_token",
    "not_tradable", "insufficient_liquidity", "invalid_amount", "transient", "slippage_exceeded", "expired",
    "wrong_venue", "unknown_venue", "price_collar", "children_failed",
)

_RANK = {status: rank for rank, status in enumerate(LIFECYCLE)}
# Which non-terminal statuses each terminal status may follow within an attempt. An owner's
# cancel wins only before the execution starts (`pending` queued, or `waiting` armed): the
# order actor stores `routing`, `building` and `submitted` in one transaction, so a cancel
# racing it finds either `pending`/`waiting` (and wins) or `submitted` (and loses), and a
# `routing` that never reached `building` belongs to an execution that has begun.
_TERMINAL_FROM = {
    "confirmed": frozenset({"submitted"}),
    "failed": frozenset(LIFECYCLE) | {SCHEDULED},
    "cancelled": frozenset({"pending", "waiting", SCHEDULED}),
    "expired": frozenset({"pending", "waiting"}),
    "completed": frozenset({SCHEDULED}),
}


class StatusRuleError(Exception):
    """An event would break the lifecycle; it is not stored."""


class OrderEnded(StatusRuleError):
    """The order already has a terminal status (cancelled or expired meanwhile, say): whoever
    was acting for it has nothing left to do."""


def check_transition(current: str, current_attempt: int, new: str, new_attempt: int) -> None:
    """Raise StatusRuleError unless `new` at `new_attempt` may follow `current` at `current_attempt`."""
    if new not in STATUSES:
        raise StatusRuleError(f"unknown status {new!r}")
    if current in TERMINAL:
        raise OrderEnded(f"order is already {current}; a terminal status never changes")
    if new_attempt == current_attempt + 1:
        if new != "routing":
            raise StatusRuleError("a new attempt starts with routing")
        return
    if new_attempt != current_attempt:
        raise StatusRuleError(f"attempt {new_attempt} cannot follow attempt {current_attempt}")
    if new in TERMINAL:
        if current not in _TERMINAL_FROM[new]:
            raise StatusRuleError(f"{new} cannot follow {current}")
        return
    if new == SCHEDULED or current == SCHEDULED:  # a parent's: pending, then scheduled as often as it reports
        if current not in ("pending", SCHEDULED) or new != SCHEDULED:
            raise StatusRuleError(f"{new} cannot follow {current}")
        return
    if new == current == "waiting":  # a waiting order's trigger moved or fired (protective orders)
        return
    if _RANK[new] <= _RANK[current]:
        raise StatusRuleError(f"{new} cannot follow {current} within attempt {new_attempt}")
