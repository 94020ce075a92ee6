"""The TriggerBook's part for the protective orders that change when they fire: a stop-limit
(a stop_loss with a floor), a trailing stop and an oco.

Their firing is stored before they are released: a `waiting` event whose meta says which side
`fired` (an oco's also which one is `cancelled`). Whoever runs the order next (this worker, or
another one after its death) reads that event and executes that side, and only it: an oco is one
order, so exactly one of its sides ever executes, even when both hold at once (its stopLoss
fires then). A trailing stop's best price seen (`highWater`) rises with the pair's price on each
tick; it is stored in a `waiting` event (`trigger: trail`) once it rose by TRAIL_STEP of the trail
(of its `trailAmount`, for a trail in price) since the last one, at most once every TRAIL_EVENT_S
per order (a drifting price writes nothing), so a worker that arms it after another one's death
resumes from the stored mark (at most that step below the true one), never from the price of the
moment.
"""
from __future__ import annotations

import logging
import time
from decimal import Decimal
from uuid import UUID

from actors.event_writer import WriterDied
from actors.messages import AppendEvents, EventsStored
from config.logs import about_order
from storage.records import EventDraft, decimal_str, utcnow
from storage.status import OrderEnded

log = logging.getLogger(__name__)

TRAIL_EVENT_S = 1.0  # at most one trail event per order this often
TRAIL_STEP = 0.1  # a trail event once the mark rose by this share of the trail (1% of price for a 10% trail)
OTHER_SIDE = {"stopLoss": "takeProfit", "takeProfit": "stopLoss"}


def price_text(value: float) -> str:
    """A price the book computed, as the events show prices (12 significant digits)."""
    return decimal_str(Decimal(f"{value:.12g}"))


def trail_meta(order, price: float | None) -> dict:
    """What a trailing stop's events say: the distance, the best price seen, the stop it makes
    (for a distance in price larger than the best price: 0, a stop no price reaches)."""
    if order.trail_amount:
        distance, stop = {"trailAmount": price_text(order.trail_amount)}, max(order.high - order.trail_amount, 0.0)
    else:
        distance, stop = {"trailPercent": price_text(order.trail * 100)}, order.high * (1 - order.trail)
    meta = {"trigger": "trail", **distance, "highWater": price_text(order.high), "stopPrice": price_text(stop)}
    if price is not None:
        meta["price"] = price_text(price)
    return meta


class ProtectiveTriggers:
    """Mixin of the TriggerBook (its thread runs all of this): trailing, firing, their events."""

    def _trailed(self, pair) -> list[str]:
        """Raise each trailing stop's best price to the pair's price; the ids of those the price
        has fallen to their trail below it. One quote a tick for the pair, one comparison each."""
        if not pair.trails:
            return []
        price = self._pair_price(pair)
        if price is None:
            return []
        now, fired = time.monotonic(), []
        for order_id in pair.trails:
            order = self.armed[order_id]
            amount = order.trail_amount  # a distance in price, else `trail` (a fraction) is the distance
            if price > order.high:
                order.high = price
            elif price <= (order.high - amount if amount else order.high * (1 - order.trail)):
                fired.append(order_id)
                continue
            if amount:
                rose = order.high > order.high_stored + amount * TRAIL_STEP
            else:
                rose = order.high > order.high_stored * (1 + order.trail * TRAIL_STEP)
            if rose and now - order.stored_at >= TRAIL_EVENT_S:
                self._store_trail(order, price, now)
        return fired

    def _store_trail(self, order, price: float, now: float) -> None:
        """Store the trailing stop's new best price (coalesced: see TRAIL_EVENT_S)."""
        meta = trail_meta(order, price)
        if self._store_protective("trail", order, meta):
            order.high_stored, order.stored_at = order.high, now

    def _fire(self, order, side: str, price: float | None) -> None:
        """Store that `side` of the order fired, then release it (see `_protect_stored`). It leaves
        the book now: it cannot fire again, whatever the next ticks see."""
        self._forget(order.order_id)
        trailing = order.trail or order.trail_amount
        meta = trail_meta(order, price) if trailing else {"trigger": "oco" if order.protect == "oco" else "stop"}
        meta["fired"] = side
        if order.protect == "oco":
            meta["cancelled"] = OTHER_SIDE[side]
        if price is not None:
            meta["price"] = price_text(price)
        log.info("order %s: its %s fired at %s", order.order_id, side, meta.get("price"),
                 extra=about_order(order.order_id))
        if not self._store_protective("fire", order, meta):
            self._arm(order)  # the writer is away: it fires again at a next tick

    def _store_protective(self, kind: str, order, meta: dict) -> bool:
        draft = EventDraft(UUID(order.order_id), "waiting", order.attempt, meta, utcnow(), order.fence)
        self.tags += 1
        self.storing[self.tags] = (kind, order)
        if self._tell_writer(AppendEvents([draft], self.actor_ref, self.tags)):
            return True
        del self.storing[self.tags]
        return False

    def _protect_stored(self, message: EventsStored) -> None:
        kind, order = self.storing.pop(message.tag)
        result = message.results[0]
        if isinstance(result, OrderEnded):  # cancelled or expired meanwhile: its job is done
            self._forget(order.order_id)
            return self._ack([order.job])
        if kind == "trail":
            if isinstance(result, WriterDied):
                order.high_stored = 0.0  # unknown: stored again at a next tick
            elif isinstance(result, Exception):  # fenced out: taken over by another worker
                log.info("order %s: trail not stored here (%s); forgotten", order.order_id, result,
                         extra=about_order(order.order_id))
                self._forget(order.order_id)
            return
        if isinstance(result, Exception) and not isinstance(result, WriterDied):
            log.info("order %s: its firing was not stored here (%s); dropped", order.order_id, result,
                     extra=about_order(order.order_id))
            return
        # Stored (or unknown: the writer died): release it. Whoever runs it reads its events: the
        # side that fired if it was stored, else it judges the price again, as at its start.
        self.armed[order.order_id] = order
        self._release([order.order_id])
