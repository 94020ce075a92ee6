"""What the worker's actors need of the halts: the message that wakes the trigger book when
they change, and the rule applied to an order.

The worker keeps one `storage.halt_watch.HaltWatch` (started before the supervisor tree,
stopped after it, like the timers); every actor reads its `current` HaltSet (immutable,
replaced whole) from its own thread: a lookup, no message, no round trip.

While a halt covers an order:
- an armed order whose trigger fires (a limit crossed, a sniper's launch) stays in the
  TriggerBook, held; it is released when the halt ends (and quotes again then);
- an order about to start an attempt with nothing of it sent (`pending` or `waiting`) is
  stored `waiting` (meta `trigger: halt` and the reason; an order already `waiting` stores
  nothing new) and handed to the TriggerBook like an armed order: it holds no thread and no
  in-flight slot, its job stays pending with this worker (so the reconciler leaves it alone
  and another worker takes it over if this one dies), and it is released on resume;
- a retry of an order already partly sent waits in place, checking again every
  HALT_RECHECK_S, then goes on;
- swaps already sent settle normally.
A market order released after more than MARKET_MAX_WAIT_SECONDS fails `stale_order`, as any
market order that waited too long: it never executes at a price its owner never saw.
"""
from __future__ import annotations

from dataclasses import dataclass

from storage.halts import NOTHING_HALTED, Halt, HaltSet

HALT_RECHECK_S = 0.5  # a partly sent order held by a halt looks again this often


@dataclass(frozen=True)
class HaltsChanged:
    """The active halts changed (to the TriggerBook, from the watch's thread): release the held
    orders no halt covers any more."""


class NoHalts:
    """Stands for a HaltWatch where nothing is ever halted (actors built without one)."""

    current: HaltSet = NOTHING_HALTED


def covering(halts: HaltSet, owner: str, token_in: str, token_out: str) -> Halt | None:
    """The halt that stops this order now, or None (one truth test when nothing is halted)."""
    return halts.covering(owner, token_in, token_out) if halts else None
