"""The refusal of an order that a halt covers: 503 `trading_halted`, with the halt's reason.

Checked on every submit (HTTP and WebSocket, `web.orders.submit_order`) against the process's
HaltSet, kept current by `storage.halt_watch.HaltWatch`: with nothing halted the check is one
truth test, so it costs the submit path nothing measurable. Nothing of a refused order is stored.
"""
from __future__ import annotations

from typing import Any

from storage.halts import Halt, HaltSet
from storage.records import OrderDraft
from web.errors import ApiError


class TradingHalted(ApiError):
    """503 `trading_halted`: the error object also carries the halt's `reason`."""

    def __init__(self, halt: Halt):
        super().__init__(503, "trading_halted", f"{halt.describe()} is halted by an operator: {halt.reason}")
        self.reason = halt.reason

    def to_api(self) -> dict[str, Any]:
        """The spec's error object, with the halt's reason."""
        return {**super().to_api(), "reason": self.reason}


def halt_covering(halts: HaltSet, draft: OrderDraft) -> Halt | None:
    """The halt that stops this order, or None (IOLoop thread; a dict lookup at most)."""
    if not halts:
        return None
    return halts.covering(draft.owner, draft.token_in, draft.token_out)
