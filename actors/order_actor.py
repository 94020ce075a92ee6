"""OrderActor: one order's life, from its stored status to a terminal one.

A message-driven state machine: every step appends its events through the EventWriter
and goes on only once they are stored; every wait (quotes, swap, signature, retry delay)
is a message, never a sleep, and is guarded by a watchdog so the order is never left
hanging. It starts from the order's stored state, so a fresh order and one resumed
after a crash take the same path: a transaction that was sent (its signature is
stored in the `submitted` event before it is sent) is looked up on the venue before
anything new is built.

The router keeps these actors in a pool: one runs one order at a time (`RunOrder`) and
is free again once it has told the router `OrderFinished`. Every request it sends is
tagged with a step number that never repeats across the orders it runs, so a late
reply meant for an earlier step (or an earlier order) is recognised and ignored.

Per order, in the usual case, the actor waits for four things: both quotes, the store
of `routing`+`building`+`submitted` (one transaction: choosing the route, building and
signing the transactions need no outside answer), the swaps (one per leg: `Execution`),
and the store of `confirmed`. A limit or sniper order that cannot run yet stores `waiting`
and goes to the worker's TriggerBook instead; the book hands it back when it fires.
"""
from __future__ import annotations

import logging
import time
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Callable

import pykka

from actors.errors import EventRejected, StepTimedOut
from actors.messages import (
    AppendEvents,
    CheckSignature,
    Drain,
    EventsStored,
    OrderActorDied,
    OrderFinished,
    QuoteReceived,
    Recheck,
    RequestQuote,
    Resend,
    RetryDue,
    RunOrder,
    SendSwap,
    SignatureChecked,
    StepExpired,
    SwapSettled,
)
from actors.execution import Execution, LegRun
from actors.halts import HALT_RECHECK_S, NoHalts, covering
from actors.protective import fired_side, floor_price, marks_firing, stored_high, trail_distance, trail_stop
from actors.retry import PERMANENT_ERRORS, RetryPolicy, exponential
from actors.trigger_book import ArmedOrder
from config import find_token
from config.logs import OrderLog
from storage.errors import FencedOut
from storage.records import EventDraft, OrderRecord, decimal_str, iso, ms_since, utcnow
from storage.status import OrderEnded
from storage.venues.base import VENUES, HopSwap, SwapRequest
from storage.venues.collar import PriceCollar
from storage.venues.paths import best_route, quote_requests

log = logging.getLogger(__name__)

ARMING_TYPES = ("limit", "sniper", "stop_loss", "take_profit", "trailing_stop", "oco")  # may wait in the trigger book
QUOTE_TIMEOUT = 10.0
STORE_TIMEOUT = 60.0
SWAP_TIMEOUT = 30.0
SIGNATURE_CHECKS = 3
RESEND_S = 0.05  # a child being restarted by the root is back within this long
RECHECK_S = (0.5, 5.0)  # first and longest wait before asking an unavailable venue again
QUOTES_PER_STEP = 100  # quote request ids: step × this + the request's index (at most 5 pairs × 2 venues)


def executed_price(amount_in: Decimal, amount_out: Decimal) -> str:
    """tokenOut per tokenIn, to 12 significant digits."""
    with localcontext() as ctx:
        ctx.prec = 12
        return decimal_str(amount_out / amount_in)


class OrderActor(pykka.ThreadingActor):
    """Executes one order at a time; supervised by the OrderRouter, which it tells when it is done."""

    def __init__(self, *, directory, timers, router, policy: RetryPolicy,
                 new_signature: Callable[[], str], worker_id: str = "", market_max_wait_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, collar: PriceCollar | None = None, halts=None):
        super().__init__()
        self.halts = halts or NoHalts()  # the worker's HaltWatch: `current` is read at each attempt's start
        self.collar = collar  # refuses a route too far below the reference price (None: no collar)
        self.clock = clock  # times the quotes' round trips
        self.market_max_wait_s = market_max_wait_s
        self.directory = directory
        self.timers = timers
        self.router = router
        self.policy = policy
        self.new_signature = new_signature
        self.worker_id = worker_id
        self.step = 0  # grows with every wait, across orders: tags requests and replies
        self.order: OrderRecord | None = None
        self.log: logging.LoggerAdapter | logging.Logger = log  # an OrderLog of the order it runs
        self.watchdog = None
        self.waiting = "idle"
        self.draining = False  # the worker is stopping: start nothing new, hand orders back

    def _reset(self, order: OrderRecord) -> None:
        """Take on a new order: everything below belongs to it alone."""
        self.order = order
        self.log = OrderLog(log, order.id)  # every line about the order carries its id
        self.token_in = find_token(order.token_in)
        self.token_out = find_token(order.token_out)
        self.amount_in = self.token_in.to_base(order.amount)
        self.attempt = order.attempt
        self.status = order.status
        self.stored_attempt = order.attempt  # the attempt of the last event stored
        self.on_stored = None
        self.quotes: dict[int, QuoteReceived] = {}  # by request index: pair × len(VENUES) + venue
        self.quote_ms: dict[str, float] = {}  # each venue's quote round trip, as this actor saw it
        self.quote_pairs: list = []  # (token_in, token_out, amount) of each pair quoted this attempt
        self.quote_started = None
        self.quote_sent = 0.0
        self.failed_swaps: list[dict] = []  # swaps that failed and no stored event names yet
        self.retry_reason: str | None = None
        self.route = None
        self.execution = Execution(self.amount_in, self.token_in, self.token_out)
        self.signature_checks = 0
        self.rechecks = 0
        self.requotes = 0
        self.unavailable_since = None
        self.swap_latency = 0.0
        self.fired = fired_side(order.events)  # a protective order's side that fired (stored), if one did

    # ---- start: fresh or resumed ------------------------------------------------------------

    def _begin(self) -> None:
        """Pick up the order where its stored history left it."""
        if self.order.terminal:
            return self._finish()
        if self.status in ("pending", "waiting"):  # nothing sent yet: check it may still run
            now = utcnow()
            expires_at = self.order.expires_at
            if expires_at is not None and now >= expires_at:
                return self._append([("expired", {"expiresAt": iso(expires_at), "latencyMs": self._latency_ms()},
                                      None)], self._finish)
            waited = (now - self.order.created_at).total_seconds()
            if self.order.type == "market" and waited > self.market_max_wait_s:
                meta = {"error": {"code": "stale_order", "message":
                                  f"waited {waited:.0f} s in the queue, more than {self.market_max_wait_s} s: "
                                  f"not executed at a price its owner never saw"},
                        "attempts": 0, "latencyMs": self._latency_ms()}
                return self._append([("failed", meta, None)], self._finish)
            return self._start_attempt(self.attempt, None)
        mine = [e for e in (self.order.events or ()) if e.attempt == self.attempt]
        routed = next((e for e in mine if e.status == "routing"), None)
        sent = next((e for e in reversed(mine) if e.status == "submitted"), None)
        self.execution.resume(routed.meta if routed else {}, sent.meta if sent else None)
        if sent is not None:
            self.log.info("order %s: resuming, asking the venues about %s", self.order.id,
                          [leg.signature for leg in self.execution.legs])
            return self._check_signatures()
        self._attempt_failed("interrupted", f"attempt {self.attempt} was interrupted at {self.status}", True)

    # ---- messages -----------------------------------------------------------------------------

    def on_receive(self, message):
        """Runs on this actor's thread."""
        if isinstance(message, EventsStored):
            if message.tag == self.step and self.waiting == "store":
                self._stored(message)
        elif isinstance(message, RunOrder):
            self._reset(message.order)
            self._begin()
        elif isinstance(message, QuoteReceived):
            if self.waiting == "quotes" and message.request_id // QUOTES_PER_STEP == self.step:
                self._quote_received(message)
        elif isinstance(message, SwapSettled):
            leg = self.execution.leg(message.result.signature) if self.waiting == "swap" else None
            if leg is not None and leg.state == "sent":
                self.swap_latency = max(self.swap_latency, message.latency)
                self._swap_settled(leg, message.result)
        elif isinstance(message, SignatureChecked):
            leg = self.execution.leg(message.status.signature) if self.waiting == "signature" else None
            if leg is not None and leg.state == "unknown":
                self._signature_checked(leg, message.status)
        elif isinstance(message, RetryDue):
            if self.waiting == "retry" and message.step == self.step:
                self._start_attempt(message.attempt, self.retry_reason)
        elif isinstance(message, StepExpired):
            if message.step_id == self.step:
                self._expired()
        elif isinstance(message, Recheck):
            if self.waiting == "recheck" and message.step == self.step:
                self._check_signatures()
        elif isinstance(message, Resend):
            self._tell(message.name, message.message)
        elif isinstance(message, Drain):
            self.draining = True
            if self.waiting in ("quotes", "retry"):  # nothing of this attempt is stored or sent
                self._finish(handed_back=True)

    def on_failure(self, exception_type, exception_value, traceback):
        """Runs on this actor's thread as it dies: the router resumes or fails the order."""
        self._cancel_watchdog()
        if self.order is not None:
            self.router.tell(OrderActorDied(str(self.order.id), repr(exception_value), self.actor_ref))

    # ---- steps ---------------------------------------------------------------------------------

    def _start_attempt(self, attempt: int, retry_reason: str | None) -> None:
        if self.draining:  # a stopping worker starts no attempt: another worker will
            return self._finish(handed_back=True)
        halt = covering(self.halts.current, self.order.owner, self.token_in.symbol, self.token_out.symbol)
        if halt is not None:
            return self._held(halt, attempt, retry_reason)
        self.attempt = attempt
        self.retry_reason = retry_reason
        self.quotes = {}
        self.quote_ms = {}
        self.quote_started = utcnow()
        self.quote_sent = self.clock()
        self._wait("quotes", QUOTE_TIMEOUT)
        # The pair's own pools, and each hop of the routes through an intermediate token.
        self.quote_pairs = quote_requests(self.token_in, self.token_out, self.execution.remaining_in)
        for i, (token_in, token_out, amount) in enumerate(self.quote_pairs):
            for j, dex in enumerate(VENUES):
                self._tell(dex, RequestQuote(self.step * QUOTES_PER_STEP + i * len(VENUES) + j, token_in,
                                             token_out, amount, self.actor_ref))

    def _quote_received(self, message: QuoteReceived) -> None:
        key = message.request_id % QUOTES_PER_STEP
        self.quotes[key] = message
        if key < len(VENUES):  # the pair's own quotes: their round trips are in the routing event
            self.quote_ms[message.dex] = round((self.clock() - self.quote_sent) * 1000, 1)
        if len(self.quotes) == len(VENUES) * len(self.quote_pairs):
            self._route()

    def _route(self) -> None:
        """Choose the venue, build and sign the transaction; store the three steps at once."""
        self._cancel_watchdog()
        usable = [q.quote for q in self.quotes.values() if q.quote is not None]
        errors = [q for q in self.quotes.values() if q.quote is None]
        own = [q for key, q in self.quotes.items() if key < len(VENUES)]  # the pair's own pools
        arming = self.status in ("pending", "waiting") and self.order.type in ARMING_TYPES
        remaining, slippage = self.execution.remaining_in, self.order.slippage_bps
        try:
            route = best_route(usable, self.token_in, self.token_out, remaining, slippage)
        except ValueError:
            route = None
        if route is None and arming and self.order.type == "sniper" and own and all(
                q.error_code == "not_tradable" for q in own):
            return self._arm({"trigger": "launch", "token": self._launch_token().symbol})
        if route is None and errors and any(q.error_code == "venue_unavailable" for q in errors) and all(
                q.error_code in ("venue_unavailable", "no_pool") for q in errors) and self._requote_later():
            return
        if route is None:
            if not errors:  # no venue answered in time: transient, worth another attempt
                return self._attempt_failed("venue_timeout", "no venue answered with a quote in time", True)
            # Permanent only when every quote was refused so: one that did not answer may yet quote.
            permanent = len(errors) == len(VENUES) * len(self.quote_pairs) and all(
                q.error_code in PERMANENT_ERRORS or q.error_code == "no_pool" for q in errors)
            error = next((q for q in errors if q.error_code != "no_pool"), errors[0])
            return self._attempt_failed(error.error_code, error.message, not permanent)
        if arming and marks_firing(self.order) and not self.execution.filled and self._protect(route, usable):
            return  # armed, or storing which side fired (then routed again)
        if arming and self.order.type == "stop_loss" and self.order.stop_limit_price is None \
                and not self.execution.filled:
            price = self._price_of(route)
            if price > self.order.stop_price:  # not fallen to the stop yet: wait for it
                return self._arm({"trigger": "stop", "stopPrice": decimal_str(self.order.stop_price),
                                  "price": decimal_str(price)})
        if self._floor() is not None:
            # The limit sets the floor of the output (of what is left to fill), whatever the
            # slippage tolerance says; each leg's minimum carries its share of it.
            floor = max(0, self._limit_min_out() - self.execution.filled_out, self.execution.rest_min_out)
            route = best_route(usable, self.token_in, self.token_out, remaining, slippage, min_total_out=floor)
            if route.amount_out < floor:  # not met: wait for the price (or fail this retry)
                if arming:
                    return self._arm({"trigger": "price", "limitPrice": decimal_str(self._floor()),
                                      "minAmountOut": decimal_str(self.token_out.to_whole(floor)),
                                      "bestAmountOut": decimal_str(self.token_out.to_whole(route.amount_out))})
                return self._attempt_failed("limit_not_met", "the price no longer meets the limit", True)
        elif self.execution.filled:
            # Part is filled: the rest must bring the whole amount to the order's minimum,
            # whatever the price has done since (each leg's minimum carries its share of it).
            floor = self.execution.rest_min_out
            route = best_route(usable, self.token_in, self.token_out, remaining, slippage, min_total_out=floor)
            if route.amount_out < floor:
                return self._attempt_failed("slippage_exceeded", "the rest would fill the order below its minimum "
                                            "for the whole amount", True)
        breach = self.collar and self.collar.breach(self.token_in, self.token_out, route.amount_in, route.amount_out)
        if breach:
            return self._attempt_failed("price_collar", breach, False)
        if not self.execution.filled:
            self.execution.order_min_out = route.min_amount_out
        self.route = route
        routing = self._routing_meta(route)
        building = self._build()
        first = self.execution.legs[0]
        submitted = {"txHash": first.signature, "dex": first.dex}
        if route.hops:
            submitted["via"] = route.via.symbol
        if route.is_split:
            submitted["legs"] = self.execution.legs_api(with_tx=True)
        self._append([("routing", routing, self.quote_started), ("building", building, None),
                      ("submitted", submitted, None)], self._send)

    def _held(self, halt, attempt: int, retry_reason: str | None) -> None:
        """A halt covers the order: start nothing. Nothing of it sent yet: it waits in the trigger
        book (no thread, no slot) for the halt's end. Partly sent: it waits here, looking again
        every HALT_RECHECK_S, and its next attempt starts once the halt ends."""
        if self.status in ("pending", "waiting"):
            self.log.info("order %s held by a halt (%s): waiting for the resume", self.order.id, halt.reason)
            return self._arm({"trigger": "halt", "reason": halt.reason})
        self.retry_reason = retry_reason
        self._wait("retry", None)
        self._later(HALT_RECHECK_S, RetryDue(attempt, self.step))

    def _requote_later(self) -> bool:
        """No venue can quote now (an outage, such as the database the simulator keeps its pools
        in): quote again with backoff, within the same attempt, for up to the market-order wait
        limit; an outage must not use up the order's attempts. False once that time is spent."""
        now = utcnow()
        if self.unavailable_since is None:
            self.unavailable_since = now
        if (now - self.unavailable_since).total_seconds() > self.market_max_wait_s:
            return False
        delay = exponential(self.requotes, *RECHECK_S)
        self.requotes += 1
        self.log.warning("order %s: no venue can quote now; quoting again in %.1fs", self.order.id, delay)
        self._wait("retry", None)
        self._later(delay, RetryDue(self.attempt, self.step))
        return True

    def _floor(self) -> Decimal | None:
        """The least price it may execute at now (a limit, a fired side's floor), or None (market)."""
        return floor_price(self.order, self.fired)

    def _protect(self, route, usable) -> bool:
        """A stop-limit, trailing stop or oco that has not fired: arm it while no trigger holds,
        else store which side fired and route again (True either way); False once fired."""
        if self.fired is not None:
            return False
        order, price = self.order, self._price_of(route)
        shown = {"price": decimal_str(price)}
        if order.type == "trailing_stop":
            high = max(stored_high(order.events) or price, price)
            stop = trail_stop(high, order.trail_percent, order.trail_amount)
            meta = {"trigger": "trail", **trail_distance(order),
                    "highWater": decimal_str(high), "stopPrice": decimal_str(stop), **shown}
            return self._arm(meta, store=True) if price > stop else self._mark("trailingStop", meta)
        stop_hit = price <= order.stop_price
        if order.type == "stop_loss":
            meta = {"trigger": "stop", "stopPrice": decimal_str(order.stop_price),
                    "limitPrice": decimal_str(order.stop_limit_price), **shown}
            return self._mark("stopLoss", meta) if stop_hit else self._arm(meta)
        # oco: both sides judged on these quotes; the stopLoss wins when both hold.
        target = self._min_out(order.limit_price)
        taken = best_route(usable, self.token_in, self.token_out, self.execution.remaining_in, order.slippage_bps,
                           min_total_out=target)
        meta = {"trigger": "oco", "targetPrice": decimal_str(order.limit_price),
                "stopPrice": decimal_str(order.stop_price), **shown}
        if stop_hit or taken.amount_out >= target:
            side = "stopLoss" if stop_hit else "takeProfit"
            return self._mark(side, {**meta, "cancelled": "takeProfit" if stop_hit else "stopLoss"})
        return self._arm(meta)

    def _mark(self, side: str, meta: dict) -> bool:
        """Store that `side` fired (the first such event decides, for every worker), then route
        again on the same quotes: that side executes."""
        self.fired = side
        self.log.info("order %s: its %s fired at %s", self.order.id, side, meta.get("price"))
        if self.worker_id:
            meta["worker"] = self.worker_id
        self._append([("waiting", {**meta, "fired": side}, None)], self._route)
        return True

    def _limit_min_out(self) -> int:
        """amount × the floor in tokenOut base units, rounded up: the order never executes below it."""
        return self._min_out(self._floor())

    def _min_out(self, price: Decimal) -> int:
        """amount × price in tokenOut base units, rounded up."""
        exact = self.order.amount * price * self.token_out.base
        return int(exact.to_integral_value(rounding=ROUND_CEILING))

    def _price_of(self, route) -> Decimal:
        """What the route gets, in whole tokenOut per whole tokenIn (as limitPrice and stopPrice)."""
        return self.token_out.to_whole(route.amount_out) / self.token_in.to_whole(route.amount_in)

    def _launch_token(self):
        """The token a sniper order waits for: whichever of its two is not tradable yet."""
        return self.token_out if not self.token_out.tradable else self.token_in

    def _arm(self, trigger: dict, store: bool = False) -> bool:
        """Not yet: store `waiting` (once, or again when `store`) and hand the order to the trigger
        book; the actor and its in-flight slot are free meanwhile."""
        expires_at = self.order.expires_at
        kind, fired = self.order.type, self.fired is not None
        floor = self._floor() if kind != "oco" or fired else self.order.limit_price  # an oco watches its target
        trailing = kind == "trailing_stop" and "highWater" in trigger
        armed = ArmedOrder(
            order_id=str(self.order.id), job=None, fence=self.order.fence, attempt=self.attempt,
            token_in=self.token_in, token_out=self.token_out, amount_in=self.amount_in,
            created_at=self.order.created_at, expires_at=expires_at,
            min_out=self._min_out(floor) if floor is not None else 0,
            limit_price=float(floor) if floor is not None else 0.0,
            launch=trigger.get("token") if kind == "sniper" else None,
            stop_price=float(self.order.stop_price) if kind in ("stop_loss", "oco") and not fired else 0.0,
            protect=kind if marks_firing(self.order) and not fired else "",
            trail=float(self.order.trail_percent) / 100 if trailing and self.order.trail_percent is not None else 0.0,
            trail_amount=float(self.order.trail_amount) if trailing and self.order.trail_amount is not None else 0.0,
            high=float(trigger["highWater"]) if trailing else 0.0,
            high_stored=float(trigger["highWater"]) if trailing else 0.0,
            owner=self.order.owner, held=trigger["trigger"] == "halt")
        self._cancel_watchdog()
        if self.status == "waiting" and not store:
            self._finish(armed=armed)
            return True
        meta = {**trigger, "expiresAt": iso(expires_at)}
        if self.worker_id:
            meta["worker"] = self.worker_id
        self._append([("waiting", meta, None)], lambda: self._finish(armed=armed))
        return True

    def _routing_meta(self, route) -> dict:
        quotes = {}
        for i, dex in enumerate(VENUES):
            answer = self.quotes.get(i)
            if answer is None or answer.quote is None:
                quotes[dex] = {"error": {"code": answer.error_code if answer else "venue_timeout",
                                         "message": answer.message if answer else "no quote in time"}}
            else:
                quotes[dex] = answer.quote.to_api()
            if dex in self.quote_ms:
                quotes[dex]["latencyMs"] = self.quote_ms[dex]
        drawn = max((q.latency for q in self.quotes.values()), default=0.0)
        api = route.to_api()
        meta = {"bestDex": route.best_dex, "quotes": quotes, "route": api,
                "quoteMs": round((utcnow() - self.quote_started).total_seconds() * 1000, 1),
                "venueLatencyMs": round(drawn * 1000, 1)}
        if route.hops:  # a route through an intermediate token: each hop, its venue(s) and amounts
            meta["hops"] = api["hops"]
        if self.worker_id:
            meta["worker"] = self.worker_id
        if self.retry_reason:
            meta["retryReason"] = self.retry_reason
        if self.failed_swaps:  # what the retry is for, swap by swap (named once)
            meta["failedSwaps"], self.failed_swaps = self.failed_swaps, []
        if self.execution.filled:  # legs of earlier attempts that need no retry, and what the rest must make up
            meta["filledLegs"] = self.execution.fills_api()
            meta["orderMinAmountOut"] = decimal_str(self.token_out.to_whole(self.execution.order_min_out))
        if log.isEnabledFor(logging.INFO):
            self.log.info("order %s attempt %d routed to %s: %s", self.order.id, self.attempt, route.best_dex,
                          {d: q.get("amountOut") for d, q in quotes.items()})
        return meta

    def _build(self) -> dict:
        """The transactions, one per leg: venue, amount, minimum output and signature. They
        are signed here, so their signatures are stored (in `submitted`) before they are
        sent, and a resumed order asks the venues about them instead of ever sending a
        second transaction."""
        route = self.route
        if route.hops:  # one transaction for the whole route: one signature, one minimum output
            hops = tuple(HopSwap(hop.token_in, hop.token_out, tuple((leg.dex, leg.amount_in, leg.amount_out)
                                                                    for leg in hop.legs)) for hop in route.hops)
            self.execution.legs = [LegRun(route.best_dex, route.amount_in, route.min_amount_out, self.new_signature(),
                                          hops=hops)]
        else:
            self.execution.legs = [LegRun(leg.dex, leg.amount_in, leg.min_amount_out, self.new_signature())
                                   for leg in route.legs]
        building = {"dex": route.best_dex, "amountIn": decimal_str(self.token_in.to_whole(route.amount_in)),
                    "minAmountOut": decimal_str(self.token_out.to_whole(route.min_amount_out))}
        if route.hops:
            building["hops"] = [hop.to_api() for hop in self.execution.legs[0].hops]
        if route.is_split:
            building["legs"] = self.execution.legs_api(with_min=True)
        if self.token_in.symbol == "SOL":
            building["wrapSol"] = True
        if self.token_out.symbol == "SOL":
            building["unwrapSol"] = True
        return building

    def _send(self) -> None:
        self._wait("swap", SWAP_TIMEOUT)
        for leg in self.execution.legs:
            request = SwapRequest(leg.signature, str(self.order.id), leg.dex, self.token_in, self.token_out,
                                  leg.amount_in, leg.min_out, leg.hops)
            self._tell(leg.dex, SendSwap(request, self.actor_ref))

    def _swap_settled(self, leg: LegRun, result) -> None:
        if result.status == "confirmed":
            leg.state, leg.amount_out, leg.hops = "confirmed", result.amount_out, result.hops
        elif result.status == "failed":
            leg.state, leg.error_code = "failed", result.error_code or "swap_failed"
            leg.message, leg.retriable = result.message or "swap failed", result.retriable
        else:
            self.log.info("order %s: swap %s timed out, asking the venue", self.order.id, leg.signature)
            leg.state = "unknown"
        if any(other.state == "sent" for other in self.execution.legs):
            return  # the other leg's answer is still to come
        self._cancel_watchdog()
        if self.execution.open_legs():
            return self._check_signatures()
        self._legs_done()

    def _check_signatures(self) -> None:
        """Ask each leg's venue about the legs whose outcome is unknown."""
        self._wait("signature", SWAP_TIMEOUT)
        for leg in self.execution.open_legs():
            leg.state = "unknown"
            self._tell(leg.dex, CheckSignature(leg.signature, self.actor_ref, str(self.order.id)))

    def _signature_checked(self, leg: LegRun, status) -> None:
        if status.status == "unknown":  # the venue cannot answer now (an outage): ask again later
            leg.state = "recheck"
        elif status.status == "confirmed":
            leg.state, leg.amount_out, leg.hops = "confirmed", status.amount_out, status.hops
        elif status.status == "failed":
            # _attempt_failed decides retriability (permanent codes never retry).
            leg.state, leg.error_code = "failed", status.error_code or "swap_failed"
            leg.message = f"transaction {leg.signature} failed: {leg.error_code}"
        else:
            leg.state, leg.error_code = "failed", "transaction_expired"
            leg.message = f"transaction {leg.signature} never landed"
        if any(other.state == "unknown" for other in self.execution.legs):
            return  # another leg's answer is still to come
        self._cancel_watchdog()
        rechecks = [other for other in self.execution.legs if other.state == "recheck"]
        if rechecks:
            for other in rechecks:
                other.state = "unknown"
            delay = exponential(self.rechecks, *RECHECK_S)
            self.rechecks += 1
            self._wait("recheck", None)
            self._later(delay, Recheck(self.step))
            return
        self.rechecks = 0
        self._legs_done()

    def _legs_done(self) -> None:
        """Every leg has its outcome: confirm once all is filled, or retry what is not."""
        self.failed_swaps += [{"dex": leg.dex, "code": leg.error_code, "txHash": leg.signature}
                              for leg in self.execution.legs if leg.state == "failed"]
        failed = self.execution.settle()
        if self.execution.remaining_in <= 0:
            return self._confirm()
        self._attempt_failed(failed.error_code, failed.message, failed.retriable)

    def _confirm(self) -> None:
        fills = self.execution.filled
        amount_in = self.order.amount
        amount_out = self.token_out.to_whole(self.execution.filled_out)
        meta = {"txHash": fills[0].signature, "dex": fills[0].dex, "amountIn": decimal_str(amount_in),
                "amountOut": decimal_str(amount_out), "executedPrice": executed_price(amount_in, amount_out),
                "latencyMs": self._latency_ms(), "venueLatencyMs": round(self.swap_latency * 1000, 1)}
        if len(fills) > 1:
            meta["legs"] = self.execution.fills_api()
        elif fills[0].hops:  # a route through an intermediate token: each hop as executed
            meta["hops"] = [hop.to_api() for hop in fills[0].hops]
        self._append([("confirmed", meta, None)], self._finish)

    def _attempt_failed(self, code: str, message: str, retriable: bool) -> None:
        if self.policy.should_retry(self.attempt, retriable and code not in PERMANENT_ERRORS):
            if self.draining:  # the next attempt is another worker's to start
                return self._finish(handed_back=True)
            delay = self.policy.delay(self.attempt)
            self.retry_reason = f"{code}: {message}"
            self.log.info("order %s attempt %d failed (%s); retry in %.2fs", self.order.id, self.attempt, code, delay)
            self._wait("retry", None)
            self._later(delay, RetryDue(self.attempt + 1, self.step))
            return
        meta = {"error": {"code": code, "message": message}, "attempts": self.attempt, "latencyMs": self._latency_ms()}
        if self.failed_swaps:
            meta["failedSwaps"] = self.failed_swaps
        self.log.info("order %s failed after %d attempt(s): %s: %s", self.order.id, self.attempt, code, message)
        # An attempt that failed before storing its routing event has no event of its own:
        # the failure closes the last stored one, and meta.attempts counts them all.
        self._append([("failed", meta, None)], self._finish, attempt=self.stored_attempt)

    def _finish(self, lost: bool = False, handed_back: bool = False, armed: ArmedOrder | None = None) -> None:
        """Done with this order (`lost`: another holder has it now; `handed_back`: the worker is
        stopping and leaves it to another one; `armed`: the trigger book watches it now); free
        for the next one."""
        self._cancel_watchdog()
        self.waiting = "idle"
        order, self.order = self.order, None
        if handed_back:
            self.log.info("order %s handed back: this worker is stopping", order.id)
        self.router.tell(OrderFinished(str(order.id), self.actor_ref, lost=lost, handed_back=handed_back,
                                       armed=armed))

    def _tell(self, name: str, message) -> None:
        """Tell the child `name` (a venue gateway, the writer); if it is being restarted, try
        again shortly: the root puts its successor in the directory."""
        try:
            self.directory.get(name).tell(message)
        except pykka.ActorDeadError:
            self._later(RESEND_S, Resend(name, message))

    # ---- plumbing ------------------------------------------------------------------------------

    def _append(self, events: list[tuple[str, dict, object]], then, attempt: int | None = None) -> None:
        """Have the writer store `events` (status, meta, timestamp or None for now) in one
        transaction, then go on with `then`."""
        now = utcnow()
        attempt = self.attempt if attempt is None else attempt
        drafts = [EventDraft(self.order.id, status, attempt, meta, ts or now, self.order.fence)
                  for status, meta, ts in events]
        self.on_stored = then
        self._wait("store", STORE_TIMEOUT)
        self._tell("event_writer", AppendEvents(drafts, self.actor_ref, self.step))

    def _stored(self, message: EventsStored) -> None:
        self._cancel_watchdog()
        if any(isinstance(result, FencedOut) for result in message.results):
            self.log.warning("order %s was taken over by another worker; this one stops acting for it", self.order.id)
            return self._finish(lost=True)
        if any(isinstance(result, OrderEnded) for result in message.results):
            self.log.info("order %s ended meanwhile (cancelled or expired): nothing left to do", self.order.id)
            return self._finish()
        for result in message.results:
            if isinstance(result, Exception):
                raise EventRejected(str(result))
        self.status = message.results[-1].status
        self.stored_attempt = message.results[-1].attempt
        then, self.on_stored = self.on_stored, None
        then()

    def _wait(self, what: str, timeout: float | None) -> None:
        """Wait for `what` under a new step number; a watchdog fires after `timeout` seconds."""
        self._cancel_watchdog()
        self.step += 1
        self.waiting = what
        if timeout is not None:
            self.watchdog = self._later(timeout, StepExpired(self.step))

    def _later(self, delay: float, message):
        """Tell this actor `message` in `delay` seconds (on the worker's timers); the timer's handle."""
        ref = self.actor_ref
        return self.timers.call_later(delay, lambda: ref.tell(message))

    def _cancel_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _expired(self) -> None:
        if self.waiting == "store":
            # The writer answers every append, retrying through an outage for as long as it
            # lasts (and its successor takes over what it held): keep waiting, never crash.
            self.log.warning("order %s: still waiting for its events to be stored", self.order.id)
            self.watchdog = self._later(STORE_TIMEOUT, StepExpired(self.step))
            return
        if self.waiting == "quotes":
            missing = {VENUES[key % len(VENUES)] for key in range(len(VENUES) * len(self.quote_pairs))
                       if key not in self.quotes}
            self.log.warning("order %s: quotes missing from %s", self.order.id, missing)
            return self._route()
        if self.waiting in ("swap", "signature") and self.signature_checks < SIGNATURE_CHECKS:
            self.signature_checks += 1
            return self._check_signatures()
        raise StepTimedOut(f"order {self.order.id}: no answer while waiting for {self.waiting}")

    def _latency_ms(self) -> int:
        return ms_since(self.order.created_at)
