"""Messages between the worker's actors: commands are imperative, events past tense."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config import Token
from storage.bus import Job
from storage.records import EventDraft, EventRecord, OrderRecord
from storage.venues.base import Quote, SignatureStatus, SwapRequest, SwapResult


# ---- to the OrderRouter ------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimedOrder:
    """A job whose order this worker has claimed in the database, with the order as stored."""

    job: Job
    order: OrderRecord


@dataclass(frozen=True)
class ExecuteOrders:
    """Run these claimed orders (fresh, or resumed from their stored status)."""

    claimed: list[ClaimedOrder]


@dataclass(frozen=True)
class OrderFinished:
    """An order actor is done with its order and free again: the order reached a terminal
    status, or (`lost`) another worker claimed it since, or (`handed_back`) the worker is
    draining and leaves it to another one."""

    order_id: str
    actor: Any = None
    lost: bool = False
    handed_back: bool = False
    armed: Any = None  # an ArmedOrder: the trigger book watches it now (its job stays ours)


@dataclass(frozen=True)
class OrderActorDied:
    """An order actor crashed; the router retries the order from its stored state or fails it."""

    order_id: str
    reason: str
    actor: Any = None


@dataclass(frozen=True)
class AttachConsumer:
    """Tells the router where to send SlotFreed."""

    consumer: object


@dataclass(frozen=True)
class InFlight:
    """Ask: how many orders are in flight (for draining)."""


@dataclass(frozen=True)
class Drain:
    """The worker is stopping: hand back every order that has not sent its swap (to the router,
    which tells its order actors)."""


# ---- to the JobConsumer ------------------------------------------------------------------
@dataclass(frozen=True)
class StopFetching:
    """Draining: take no more jobs, but keep the heartbeat so no one takes ours meanwhile."""


@dataclass(frozen=True)
class SlotFreed:
    """In-flight slots are free again."""

    count: int = 1


@dataclass(frozen=True)
class Poll:
    """Look for work (self-sent)."""


@dataclass(frozen=True)
class Triggered:
    """Armed orders whose trigger fired: start them (their jobs are already this worker's)."""

    jobs: list[Job]


# ---- to a VenueGateway -------------------------------------------------------------------
@dataclass(frozen=True)
class RequestQuote:
    request_id: int
    token_in: Token
    token_out: Token
    amount_in: int
    reply_to: Any


@dataclass(frozen=True)
class SendSwap:
    request: SwapRequest
    reply_to: Any


@dataclass(frozen=True)
class CheckSignature:
    signature: str
    reply_to: Any
    order_id: str = ""  # whose swap it is (for the gateway's log lines)


@dataclass(frozen=True)
class CallDue:
    """A venue call whose simulated latency has elapsed (sent by the timers)."""

    call: Any
    latency: float = 0.0


@dataclass(frozen=True)
class LandBlock:
    """Send the swaps gathered so far together (self-sent: one block, one transaction)."""


# ---- to an OrderActor --------------------------------------------------------------------
@dataclass(frozen=True)
class RunOrder:
    """Take this order to a terminal status (a pooled actor runs one order at a time)."""

    order: OrderRecord


@dataclass(frozen=True)
class QuoteReceived:
    request_id: int
    dex: str
    quote: Quote | None
    error_code: str | None = None
    message: str | None = None
    latency: float = 0.0  # simulated latency drawn for this call, seconds


@dataclass(frozen=True)
class SwapSettled:
    result: SwapResult
    latency: float = 0.0


@dataclass(frozen=True)
class SignatureChecked:
    status: SignatureStatus


@dataclass(frozen=True)
class EventsStored:
    results: list[EventRecord | Exception]
    tag: int = 0  # the AppendEvents' tag: which step of which order asked


@dataclass(frozen=True)
class RetryDue:
    attempt: int
    step: int = 0


@dataclass(frozen=True)
class Resend:
    """Tell `message` to the child named `name` again (it was being restarted)."""

    name: str
    message: Any


@dataclass(frozen=True)
class Recheck:
    """Ask the venue about the swap's signature again (it could not answer)."""

    step: int


@dataclass(frozen=True)
class StepExpired:
    """A watchdog fired: the reply for step `step_id` never came."""

    step_id: int


# ---- to the EventWriter ------------------------------------------------------------------
@dataclass(frozen=True)
class AppendEvents:
    drafts: list[EventDraft]
    reply_to: Any = None
    tag: int = 0  # returned in EventsStored


@dataclass(frozen=True)
class Flush:
    """Write everything buffered (self-sent after the appends already queued)."""


# ---- to the RootSupervisor ---------------------------------------------------------------
@dataclass(frozen=True)
class ChildDied:
    """A child of the root died; `leftovers`: messages it had accepted and not handled."""

    name: str
    reason: str = field(default="")
    leftovers: tuple = ()
