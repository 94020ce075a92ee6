"""Orders over time (twap, dca): the plan of a parent's schedule, as pure functions.

A twap sells its `amount` in `slices` equal children spread evenly over `durationSeconds`:
slice i is due at start + i * duration / slices (the first at once, the last one step before
the end), the last slice taking what rounding to the token's decimals leaves; an optional `jitterSeconds`
delays each slice by a fixed pseudo-random part of it (less than a step). A dca buys with
`amount` every `intervalSeconds`, `count` times: slice 0 at once, each next one an interval
after the previous child was created (so a paused schedule resumes with one slice at once, not
with a burst of the ones it missed); a dca given a `totalAmount` buys `amount` until the last
purchase, which takes what is left of it. Every figure comes from the stored parent and children,
so any worker can resume a schedule from the database.
"""
from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from config import find_token
from storage.records import OrderRecord, decimal_str


def slice_count(parent: OrderRecord) -> int:
    """How many children the parent's schedule creates in all."""
    schedule = parent.schedule or {}
    return int(schedule.get("slices") or schedule.get("count") or 0)


def step_seconds(parent: OrderRecord) -> float:
    """Seconds between two slices."""
    schedule = parent.schedule or {}
    if parent.type == "twap":
        return schedule["durationSeconds"] / schedule["slices"]
    return float(schedule["intervalSeconds"])


def slice_amount(parent: OrderRecord, index: int) -> Decimal:
    """What child `index` sells: a twap's equal share (the last takes the remainder), a dca's amount."""
    if parent.type != "twap":
        total = (parent.schedule or {}).get("totalAmount")
        if total is not None and index == slice_count(parent) - 1:  # a dca up to a total: the rest
            return Decimal(total) - parent.amount * index
        return parent.amount
    token = find_token(parent.token_in)
    total, n = token.to_base(parent.amount), slice_count(parent)
    share = total // n
    return token.to_whole(share if index < n - 1 else total - share * (n - 1))


def total_amount(parent: OrderRecord) -> Decimal:
    """What the whole schedule sells: a twap's amount, a dca's amount times its count."""
    if parent.type == "twap":
        return parent.amount
    total = (parent.schedule or {}).get("totalAmount")
    return Decimal(total) if total is not None else parent.amount * slice_count(parent)


def due_at(parent: OrderRecord, children: list[OrderRecord]) -> datetime | None:
    """When the next child is due (naive UTC), or None when every slice exists."""
    index = len(children)
    if index >= slice_count(parent):
        return None
    if parent.type == "twap":
        return parent.created_at + timedelta(seconds=index * step_seconds(parent) + jitter(parent, index))
    if not children:
        return parent.created_at
    return children[-1].created_at + timedelta(seconds=step_seconds(parent))


def jitter(parent: OrderRecord, index: int) -> float:
    """A twap slice's delay in [0, jitterSeconds): drawn from the parent's id and the slice, so
    every worker that resumes the schedule computes the same one. Less than a step: the slices
    keep their order and the last one stays within the duration."""
    spread = (parent.schedule or {}).get("jitterSeconds") or 0
    if not spread:
        return 0.0
    digest = hashlib.sha256(f"{parent.id}:{index}".encode()).digest()
    return spread * int.from_bytes(digest[:8], "big") / 2**64


def child_expiry(parent: OrderRecord) -> int:
    """A child with a limit price waits for it until the next slice is due, then expires (skipped)."""
    return max(1, math.ceil(step_seconds(parent)))


def progress(parent: OrderRecord, children: list[OrderRecord]) -> dict[str, Any]:
    """The parent's figures from its children: sold, received, left, average price, counts."""
    filled = received = Decimal(0)
    counts: dict[str, int] = {}
    for child in children:
        counts[child.status] = counts.get(child.status, 0) + 1
        if child.status == "confirmed":
            filled += sum((Decimal(f["amountIn"]) for f in child.fills), Decimal(0))
            received += sum((Decimal(f["amountOut"]) for f in child.fills), Decimal(0))
    return {
        "filled": decimal_str(filled),
        "received": decimal_str(received),
        "remaining": decimal_str(max(total_amount(parent) - filled, Decimal(0))),
        "averagePrice": decimal_str(received / filled) if filled else None,
        "slices": slice_count(parent),
        "created": len(children),
        "settled": sum(1 for c in children if c.terminal),
        "confirmed": counts.get("confirmed", 0),
    }
