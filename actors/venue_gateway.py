"""VenueGateway: one actor per venue, between order actors and the venue client.

Simulated latency is scheduled on the timers, never slept: the gateway tells itself
`CallDue` when a call's latency has elapsed, then makes the (instant) call and
replies. Quotes for many orders are in the air at once; they complete together.
Swaps that are due together are sent together (`Venue.execute_swaps`: the simulator
lands them in one block, one transaction), gathered with `storage.batching.Gatherer`.
A venue failing most of its recent swaps answers quotes with `circuit_open` for a cool-down
(`actors.circuit_breaker`), so orders route to the other venue.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import pykka

from actors.messages import (
    CallDue,
    CheckSignature,
    LandBlock,
    QuoteReceived,
    RequestQuote,
    SendSwap,
    SignatureChecked,
    SwapSettled,
)
from actors.circuit_breaker import CircuitBreaker
from actors.supervision import SupervisedActor
from config.logs import about_order
from storage.batching import Gatherer
from storage.errors import StorageError, StorageUnavailable
from storage.pool_notices import pools_changed
from storage.venues.base import SignatureStatus, SwapResult, Venue, VenueError

log = logging.getLogger(__name__)

MAX_BLOCK = 200
NOTICE_EVERY_S = 0.05  # pools notices: at most one per gateway this often; the pools moved meanwhile join the next


@dataclass(frozen=True)
class NoticeDue:
    """Announce the pools moved since the last notice (self-sent)."""
COOL_DOWN_S = 30.0


class VenueGateway(SupervisedActor):
    """Serves RequestQuote, SendSwap and CheckSignature for one venue.

    `current` gives the venue's gateway now (the Directory's entry), so a call whose latency
    ends after this gateway was replaced reaches its successor instead of getting lost.
    `announce` broadcasts a control message (the bus's `publish_control`): after a block lands,
    which tokens' pools moved (for streamed quotes).
    """

    def __init__(self, venue: Venue, timers, supervisor=None, current: Callable[[], pykka.ActorRef] | None = None,
                 breaker: CircuitBreaker | None = None, announce: Callable[[dict], None] | None = None,
                 wait_s: float = 0.0):
        super().__init__(supervisor)
        self.child_name = venue.name
        self.venue = venue
        self.breaker = breaker or CircuitBreaker(COOL_DOWN_S)  # the supervisor's: a successor keeps it
        self.timers = timers
        self.current = current
        self.announce = announce
        self.swaps: Gatherer[tuple[SendSwap, float]] = Gatherer(MAX_BLOCK, wait_s)  # BATCH_WAIT_MS
        self.block: list[tuple[SendSwap, float]] = []  # the swaps being sent, until their senders are told
        self.moved: set[str] = set()  # tokens whose pools moved since the last notice
        self.noticed_at = -math.inf  # monotonic time of the last notice
        self.notice_due = False  # a NoticeDue is on its way

    def on_receive(self, message):
        """Runs on this gateway's thread."""
        if isinstance(message, CallDue):
            self._call(message.call, message.latency)
        elif isinstance(message, LandBlock):
            if self.swaps.due():  # else it landed early (company came)
                self._land_block()
        elif isinstance(message, NoticeDue):
            self.notice_due = False
            self._notice()
        elif isinstance(message, (RequestQuote, CheckSignature)):
            self._after(self.venue.quote_latency(), message)
        elif isinstance(message, SendSwap):
            self._after(self.venue.swap_latency(), message)

    def _after(self, delay: float, call) -> None:
        if delay <= 0:
            self._call(call, 0.0)
            return
        current, due = self.current or (lambda ref=self.actor_ref: ref), CallDue(call, delay)
        self.timers.call_later(delay, lambda: current().tell(due))

    def _call(self, call, latency: float) -> None:
        if isinstance(call, SendSwap):
            if self.swaps.add((call, latency)):
                self._schedule_block()
            return
        if isinstance(call, RequestQuote):
            reply = self._quote(call, latency)
        else:
            try:
                reply = SignatureChecked(self.venue.signature_status(call.signature))
            except StorageUnavailable as exc:  # an outage: the order asks again later
                log.warning("%s: signature status of %s unknown for now: %s", self.venue.name, call.signature, exc,
                            extra=about_order(call.order_id))
                reply = SignatureChecked(SignatureStatus(call.signature, "unknown"))
            except Exception:  # a bug: the order asks again later
                log.exception("%s: signature status of %s failed", self.venue.name, call.signature,
                              extra=about_order(call.order_id))
                reply = SignatureChecked(SignatureStatus(call.signature, "unknown"))
        self._reply(call.reply_to, reply)

    def _reply(self, reply_to, reply) -> None:
        try:
            reply_to.tell(reply)
        except pykka.ActorDeadError:
            log.info("%s: reply to a finished order dropped", self.venue.name)

    def _land_block(self) -> None:
        """Send every swap that is due, together; reply to each sender."""
        block = self.block = self.swaps.take()
        requests = [send.request for send, _ in block]
        try:
            results = self.venue.execute_swaps(requests)
        except StorageUnavailable as exc:  # an outage: each sender asks the chain about its swap
            log.warning("%s: sending %d swaps failed: %s", self.venue.name, len(requests), exc)
            results = [exc] * len(requests)
        except Exception as exc:  # the swaps may or may not have landed: each sender asks the chain
            log.exception("%s: sending %d swaps failed", self.venue.name, len(requests))
            results = [exc] * len(requests)
        for (send, latency), result in zip(block, results):
            settled = self._swap_result(send.request, result)
            self.breaker.record(settled.status, settled.error_code)
            self._reply(send.reply_to, SwapSettled(settled, latency))
        self.block = []
        self._announce_pools(requests, results)
        if self.swaps.done():
            self._schedule_block()

    def _schedule_block(self) -> None:
        """Land the block now, or after waiting a little for company (storage/batching.py)."""
        self.timers.tell(self.actor_ref, LandBlock(), self.swaps.wait())

    def _announce_pools(self, requests, results) -> None:
        """Tell the web processes which pools moved (swaps that landed, or may have: timeouts): at
        once, unless a notice went less than NOTICE_EVERY_S ago; then with the next one, when
        that time is up (streamed quotes are coalesced to QUOTE_STREAM_INTERVAL_MS anyway)."""
        if self.announce is None:
            return
        self.moved.update(t for request, result in zip(requests, results)
                          if isinstance(result, SwapResult) and result.status in ("confirmed", "timeout")
                          for t in (request.token_in.symbol, request.token_out.symbol))
        if not self.moved or self.notice_due:
            return
        wait = self.noticed_at + NOTICE_EVERY_S - time.monotonic()
        if wait <= 0:
            return self._notice()
        self.notice_due = True
        ref = self.actor_ref
        self.timers.call_later(wait, lambda: ref.tell(NoticeDue()))

    def _notice(self) -> None:
        moved, self.moved = self.moved, set()
        if moved:
            self.noticed_at = time.monotonic()
            try:
                self.announce(pools_changed(self.venue.name, moved))
            except StorageError as exc:  # best effort: streamed quotes catch up at their refresh
                log.warning("%s: could not announce moved pools: %s", self.venue.name, exc)
            except Exception:  # a notice must never take the gateway down
                log.exception("%s: could not announce moved pools", self.venue.name)

    def leftovers(self) -> list:
        """Runs on this gateway's thread as it dies: the block being sent has an unknown outcome
        (its senders ask the chain); the calls not made yet go to the next gateway."""
        for send, latency in self.block:
            self._reply(send.reply_to, SwapSettled(SwapResult(send.request.signature, "timeout"), latency))
        due = [CallDue(send, latency) for send, latency in self.swaps.drain()]
        if self.moved and self.announce is not None:
            self._notice()  # best effort: a lost notice waits for the streamed quotes' refresh
        return due + [m for m in self.drain_inbox() if not isinstance(m, (LandBlock, NoticeDue))]

    def _quote(self, call: RequestQuote, latency: float) -> QuoteReceived:
        skipped = self.breaker.refusal()
        if skipped:
            return QuoteReceived(call.request_id, self.venue.name, None, "circuit_open",
                                 f"{self.venue.name}: {skipped}", latency)
        try:
            quote = self.venue.quote(call.token_in, call.token_out, call.amount_in)
        except VenueError as exc:
            return QuoteReceived(call.request_id, self.venue.name, None, exc.code, exc.message, latency)
        except StorageUnavailable as exc:  # an outage: worth another attempt, not a traceback
            log.warning("%s: quote failed: %s", self.venue.name, exc)
            return QuoteReceived(call.request_id, self.venue.name, None, "venue_unavailable", str(exc), latency)
        except Exception as exc:  # a bug: worth another attempt, not a dead gateway
            log.exception("%s: quote failed", self.venue.name)
            return QuoteReceived(call.request_id, self.venue.name, None, "venue_unavailable", str(exc), latency)
        return QuoteReceived(call.request_id, self.venue.name, quote, latency=latency)

    @staticmethod
    def _swap_result(request, result) -> SwapResult:
        if isinstance(result, SwapResult):
            return result
        if isinstance(result, VenueError):
            return SwapResult(request.signature, "failed", error_code=result.code, message=result.message)
        # Anything else: the swap may or may not have landed, so the sender asks the chain.
        return SwapResult(request.signature, "timeout", message=str(result))
