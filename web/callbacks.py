"""The default callbackUrl of an owner's orders (webhooks), where keys are managed.

A submit without `callbackUrl` takes the `callbackUrl` of its owner's newest live managed key
(`POST /api/admin/keys`; `OperatorStore.callback_url_of`), read again at most every
DEFAULTS_TTL_S per owner, so a key's new default applies within that. Without managed keys
(none created, no ADMIN_KEYS) nothing is looked up: a submit costs nothing more.
"""
from __future__ import annotations

import time
from dataclasses import replace

from storage.records import OrderDraft

DEFAULTS_TTL_S = 2.0
MAX_OWNERS = 10_000


class CallbackDefaults:
    """The default callbackUrl of each owner, cached; `apply` on the IOLoop thread."""

    def __init__(self, services, ttl_s: float = DEFAULTS_TTL_S, clock=time.monotonic):
        self._services = services
        self._ttl_s = ttl_s
        self._clock = clock
        self._known: dict[str, tuple[float, str | None]] = {}

    async def apply(self, draft: OrderDraft) -> OrderDraft:
        """The draft with its owner's default callbackUrl when it names none (itself otherwise)."""
        if draft.callback_url is not None or not draft.owner:
            return draft
        now = self._clock()
        known = self._known.get(draft.owner)
        if known is None or now - known[0] >= self._ttl_s:
            url = await self._services.run(self._services.storage.operators.callback_url_of, draft.owner)
            if len(self._known) >= MAX_OWNERS:
                self._known.clear()
            known = self._known[draft.owner] = (now, url)
        return draft if known[1] is None else replace(draft, callback_url=known[1])
