"""The README's fault guarantees, checked over the public API once a fault is over.

Each check returns the broken guarantees as lines of text (empty: all held), so a test
reports every order that went wrong, and how, in one assertion.

Per accepted order: its listener got seq 1..n exactly once (over all its connections)
ending with a terminal event; the stored history is what was streamed; the order is
terminal; the simulated chain executed it at most once (one swap per leg: a split order
has two), and exactly the swaps its fills name. Apart from those: which orders ended other than `confirmed` (where nothing but the
fault could fail one). Per probing submit: 202, or 503 `not_ready` (or `overloaded`, once the
queue's oldest job has waited past QUEUE_MAX_WAIT_SECONDS), answered within a bound.
"""
from __future__ import annotations

from typing import Callable

from tests.e2e.cluster import TERMINAL

# 503s that mean "retry later": a server down, or (after an outage) the queue's oldest job too old.
RETRY_LATER = ("not_ready", "overloaded")
from tests.e2e.load import Answer, Follower


def _stream_problems(follower: Follower) -> list[str]:
    problems = list(follower.problems)
    seqs = [frame["seq"] for frame in follower.frames]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"streamed seqs are not 1..n exactly once: {seqs} over {_connections(follower)}")
    statuses = [frame["status"] for frame in follower.frames]
    if any(status in TERMINAL for status in statuses[:-1]):
        problems.append(f"a terminal event before the last one: {statuses}")
    return problems


def _connections(follower: Follower) -> str:
    return ", ".join(f"port {c.port} after={c.after}: {c.frames} frames, "
                     f"{c.error or f'closed {c.close_code}'}" for c in follower.connections)


async def order_problems(client, follower: Follower) -> tuple[list[str], dict | None]:
    """What is wrong with one accepted order, its stream and its executions; and the order."""
    problems = _stream_problems(follower)
    code, order = await client.order(follower.order_id)
    if code != 200:
        return problems + [f"GET /api/orders answered {code}: {order}"], None
    streamed = [(f["seq"], f["status"]) for f in follower.frames]
    stored = [(e["seq"], e["status"]) for e in order["events"]]
    if follower.done and streamed != stored:
        problems.append(f"stored history {stored} differs from the stream {streamed}")
    if order["status"] not in TERMINAL:
        problems.append(f"not terminal: {order['status']} (attempt {_attempt(order)})")
    code, answer = await client.request("GET", f"/api/sim/swaps?orderId={follower.order_id}")
    if code != 200:
        return problems + [f"GET /api/sim/swaps answered {code}: {answer}"], order
    executed = transactions(answer)
    filled = sorted(fill["txHash"] for fill in order["fills"])
    legs = max(1, len(filled))  # one swap per leg: a split order has two
    if len(executed) > legs:
        problems.append(f"executed {len(executed)} swaps for {legs} leg(s): {executed}")
    if executed != filled:
        problems.append(f"the chain executed {executed} but the order's fills are {filled}")
    return problems, order


def confirmed_swaps(confirmed: dict) -> list[str]:
    """The swaps a `confirmed` event names, sorted: one per leg (a split order has two)."""
    meta = confirmed["meta"]
    return sorted(leg["txHash"] for leg in meta.get("legs") or [meta])


def executed(swaps: dict) -> list[str]:
    """The swaps an answer of GET /api/sim/swaps lists, sorted."""
    return sorted(swap["txHash"] for swap in swaps["swaps"])


def transactions(swaps: dict) -> list[str]:
    """The transactions an answer of GET /api/sim/swaps lists, sorted: a route through an
    intermediate token is one transaction (one signature) of several swaps."""
    return sorted({swap["txHash"] for swap in swaps["swaps"]})


def _attempt(order: dict) -> int:
    return order["events"][-1]["attempt"] if order.get("events") else 0


async def check_orders(client, followers: list[Follower]) -> tuple[list[str], list[dict]]:
    """Every accepted order's broken guarantees, one line each prefixed by the order id; and the
    orders as GET /api/orders/ID shows them now."""
    problems, orders = [], []
    for follower in followers:
        found, order = await order_problems(client, follower)
        problems += [f"order {follower.order_id[:8]}: {problem}" for problem in found]
        if order is not None:
            orders.append(order)
    return problems, orders


def not_confirmed(orders: list[dict], may_fail: Callable[[dict], bool] = lambda order: False) -> list[str]:
    """The terminal orders that did not confirm (and may not fail), with their error and attempts."""
    return [f"order {o['orderId'][:8]}: {o['status']} after {o['attempts']} attempts: {o['error']}"
            for o in orders if o["status"] in TERMINAL and o["status"] != "confirmed" and not may_fail(o)]


def check_answers(answers: list[Answer], bound_s: float) -> list[str]:
    """Submits while a server is down: each answered 202, or 503 `not_ready` / `overloaded`, within `bound_s`."""
    problems = []
    for answer in answers:
        if answer.code == 599 or answer.seconds > bound_s:
            problems.append(f"a submit got no answer within {bound_s}s ({answer.seconds:.1f}s, code {answer.code})")
        elif answer.code == 503 and answer.error not in RETRY_LATER:
            problems.append(f"a submit answered 503 {answer.error}, not one of {RETRY_LATER}")
        elif answer.code not in (202, 503):
            problems.append(f"a submit answered {answer.code} {answer.error}")
    return problems


def report(problems: list[str], limit: int = 60) -> str:
    """The problems as one readable message (the first `limit` of them)."""
    more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} found:\n" + "\n".join(problems[:limit]) + more
