"""WebhookDispatcher: sends the webhook deliveries that are due, from every worker, in order per order.

Deliveries wait in the database (storage/webhook_sql.py), written with their events. Every
WEBHOOK_POLL_SECONDS, and as soon as a send ends, the dispatcher leases as many due heads
(the oldest pending delivery of an order) as it has free senders (WEBHOOK_CONCURRENCY) and
hands each to a sender thread, which POSTs it within WEBHOOK_TIMEOUT_SECONDS; the outcome
comes back here and is recorded: delivered, tried again later (1 s doubling up to
WEBHOOK_BACKOFF_MAX_SECONDS, jittered), or given up (WEBHOOK_RETRY_SECONDS after the event,
or at once for a refused address). Only then can the order's next delivery become a head,
so an order's events go out in `seq` order.

Nothing here runs on an order's path: the order actors never wait for it, its database work
is on its own thread's connection, and a receiver that hangs holds one sender thread for
at most the timeout per step. A lease lasts three timeouts and a second: a worker that dies
holding one loses it then, and another worker sends the delivery (perhaps a second time). A
worker that stops (SIGTERM) lets its sends in flight end and records them, for up to
STOP_WAIT_S.
"""
from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

import pykka

from actors.supervision import SupervisedActor
from storage.errors import StorageError
from storage.records import utcnow
from storage.webhook_http import Outcome, post_event
from storage.webhooks import Delivery

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0
STOP_WAIT_S = 4.0  # under the root's 5 s for stopping a child


@dataclass(frozen=True)
class Tick:
    """Periodic: look for deliveries due."""


@dataclass(frozen=True)
class Sent:
    """A sender thread's report: the outcome of one try."""

    delivery: Delivery
    outcome: Outcome


def retry_delay(attempt: int, max_s: float, rng=random.random) -> float:
    """The wait after failed try number `attempt`: 1 s doubling up to `max_s`, in its upper half."""
    ceiling = min(max_s, BACKOFF_BASE_S * 2 ** min(attempt - 1, 30))
    return ceiling * (0.5 + rng() / 2)


class WebhookDispatcher(SupervisedActor):
    """Leases due deliveries, sends them on a bounded pool, records their outcomes."""

    child_name = "webhook_dispatcher"

    def __init__(self, webhooks, timers, settings, supervisor=None, post=post_event):
        super().__init__(supervisor)
        self.webhooks = webhooks
        self.timers = timers
        self.settings = settings
        self.post = post
        self.lease_s = 3 * settings.webhook_timeout_s + 1  # resolving, connecting, reading: a timeout each
        self.senders = ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="webhook-sender")
        self.in_flight = 0
        self.sending: list = []  # the sends' futures (this actor's thread only)
        self.unheard: list[Sent] = []  # outcomes that came after this actor stopped taking messages
        self._timer = None

    def on_start(self):
        """Runs on the dispatcher's thread."""
        self.actor_ref.tell(Tick())

    def on_receive(self, message):
        """Runs on the dispatcher's thread."""
        if isinstance(message, Tick):
            self._fill()
            ref = self.actor_ref
            self._timer = self.timers.call_later(self.settings.webhook_poll_s, lambda: ref.tell(Tick()))
        elif isinstance(message, Sent):
            self.in_flight -= 1
            self._record(message.delivery, message.outcome)
            self._fill()

    def _fill(self) -> None:
        free = self.settings.webhook_concurrency - self.in_flight
        if free <= 0:
            return
        try:
            due = self.webhooks.claim(utcnow(), self.lease_s, free)
        except StorageError as exc:  # the database is away: the next tick tries again
            log.warning("looking for webhook deliveries failed: %s", exc)
            return
        self.sending = [future for future in self.sending if not future.done()]
        for delivery in due:
            try:
                secret = self.webhooks.secret_for(delivery.owner)
            except StorageError as exc:  # its lease expires and it is tried again
                log.warning("no webhook secret now: %s", exc)
                return
            self.in_flight += 1
            self.sending.append(self.senders.submit(self._send, delivery, secret))

    def _send(self, delivery: Delivery, secret: str) -> None:
        """Runs on a sender thread."""
        try:
            outcome = self.post(delivery, secret, self.settings.webhook_timeout_s,
                                self.settings.webhook_allow_private)
        except Exception as exc:  # noqa: BLE001 - a bug must not strand the delivery's slot
            outcome = Outcome(None, f"{type(exc).__name__}: {exc}")
        try:
            self.actor_ref.tell(Sent(delivery, outcome))
        except pykka.ActorDeadError:  # stopping: on_stop records it (dead: its lease expires, it is sent again)
            self.unheard.append(Sent(delivery, outcome))

    def _record(self, delivery: Delivery, outcome: Outcome) -> None:
        now = utcnow()
        if outcome.delivered:
            state, next_at = "delivered", now
        elif outcome.permanent or now - delivery.created_at >= timedelta(seconds=self.settings.webhook_retry_s):
            state, next_at = "failed", now
        else:
            delay = retry_delay(delivery.attempt, self.settings.webhook_backoff_max_s)
            state, next_at = "pending", now + timedelta(seconds=delay)
        if state != "delivered":
            log.log(logging.WARNING if state == "failed" else logging.INFO, "webhook %s #%d try %d: %s (%s)",
                    delivery.order_id, delivery.seq, delivery.attempt, outcome.error,
                    "given up" if state == "failed" else "tried again later")
        try:
            if not self.webhooks.settle(delivery, state, next_at, outcome.status, outcome.error):
                log.warning("webhook %s #%d: its lease was lost before its outcome was recorded",
                            delivery.order_id, delivery.seq)
        except StorageError as exc:  # its lease expires: it is sent again (at least once)
            log.warning("recording webhook %s #%d failed: %s", delivery.order_id, delivery.seq, exc)

    def on_stop(self):
        """Runs on the dispatcher's thread: no new sends; record those in flight that end within
        STOP_WAIT_S (the others' leases expire and another worker sends them again)."""
        if self._timer is not None:
            self._timer.cancel()
        self.senders.shutdown(wait=False, cancel_futures=True)
        wait(self.sending, timeout=STOP_WAIT_S)
        for message in self.drain_inbox() + self.unheard:
            if isinstance(message, Sent):
                self._record(message.delivery, message.outcome)

    def on_failure(self, exception_type, exception_value, traceback):
        """Runs on the dispatcher's thread as it dies: stop the senders, tell the root."""
        self.senders.shutdown(wait=False, cancel_futures=True)
        super().on_failure(exception_type, exception_value, traceback)
