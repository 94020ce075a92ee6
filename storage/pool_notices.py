"""The "pools changed" notice: a worker whose swaps landed tells every web process which tokens'
pools moved, on the bus's control channel, so streamed quotes (web/quote_stream.py) on those
tokens are computed again at once instead of at their next refresh.

Best effort, like every control message: a lost notice delays a quote until its refresh
(QUOTE_STREAM_REFRESH_MS), which also carries the pools' drift.
"""
from __future__ import annotations

from typing import Iterable

TOPIC = "pools"


def pools_changed(dex: str, tokens: Iterable[str]) -> dict:
    """The control message: swaps landed on `dex` in pools of these token symbols."""
    return {"topic": TOPIC, "dex": dex, "tokens": sorted(set(tokens))}


def changed_tokens(message: dict) -> frozenset[str] | None:
    """The token symbols a control message says moved (empty: any pool may have moved); None when
    it is not a pools notice."""
    if message.get("topic") != TOPIC:
        return None
    tokens = message.get("tokens")
    if not isinstance(tokens, list):
        return frozenset()
    return frozenset(t for t in tokens if isinstance(t, str))
