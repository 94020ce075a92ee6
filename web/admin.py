"""The operator API, under `/api/admin/`: only operator keys (`ADMIN_KEYS`) pass; a trading key
gets 403 `forbidden`, no key 401. Every action an operator takes (each POST and DELETE here,
refused or not) is written to the audit log with who (the operator key's id), what, on
what, the request and the answer; `GET /api/admin/audit` reads it back, newest first.
"""
from __future__ import annotations

import logging
from typing import Any

from web.access import Caller, forbidden
from web.base import JsonBodyHandler
from web.errors import ApiError, to_api_error
from web.validation import parse_json_object

log = logging.getLogger(__name__)


class AdminHandler(JsonBodyHandler):
    """An operator endpoint. Subclasses name their `action` and answer through `answer`, which
    writes the audit entry before the client hears the answer. A POST implements `post_json`;
    a GET or DELETE starts with `self.check_body()` (the refusal decided from the headers)."""

    action = ""
    caller: Caller | None = None
    audit_target = ""  # what the action is about (a key id, a pair), set by the subclass

    def prepare(self) -> Any:
        pending = super().prepare()  # a POST is authenticated there
        if self.request.method not in ("POST", "OPTIONS"):
            try:  # like a POST's, the refusal is answered once any body is read: check_body()
                lookup = self.authenticate()
                if lookup is not None:  # a managed (trading) key: looked up, then refused
                    return self._refuse_later(lookup)
            except ApiError as error:
                self._refusal = error
        return pending

    async def _refuse_later(self, lookup) -> None:
        try:
            await lookup
        except ApiError as error:
            self._refusal = error

    def admit_caller(self, caller: Caller) -> None:
        if not self.services.settings.admin_keys:
            raise forbidden("no operator keys are configured on this engine (ADMIN_KEYS)")
        if not caller.operator:
            raise forbidden("an operator key (one of ADMIN_KEYS) is required here")
        self.caller = caller

    def json_body(self) -> dict:
        """The POST body as a JSON object (empty body: {})."""
        return parse_json_object(self.body) if self.body.strip() else {}

    async def answer(self, body: Any, status: int = 200, request: dict | None = None,
                     audited: Any = None) -> None:
        """Audit the action (when this is one), then answer `body` with `status`. `audited`: what
        the audit log keeps of the answer when it must not keep all of it (a created key)."""
        if self._audited():
            await self.services.run(self.storage.operators.record, self.caller.key_id, self.action,
                                    self.audit_target, request or {}, status,
                                    body if audited is None else audited)
        self.write_json(body, status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        super().write_error(status_code, **kwargs)
        # A refused action is audited too (best effort: the refusal is already answered).
        if self._audited():
            exc = kwargs.get("exc_info", (None, None, None))[1]
            error = to_api_error(exc, status_code)
            future = self.services.executor.submit(
                self.storage.operators.record, self.caller.key_id, self.action, self.audit_target,
                {}, error.status, error.body())
            future.add_done_callback(_log_failure)

    def _audited(self) -> bool:
        return bool(self.action) and self.request.method != "GET" and self.caller is not None \
            and self.caller.operator


def _log_failure(future) -> None:
    if future.exception() is not None:
        log.warning("an operator's refused action could not be audited: %r", future.exception())


class AuditHandler(AdminHandler):
    """`GET /api/admin/audit?limit=N&before=ID`: the audit log, newest first."""

    async def get(self) -> None:
        self.check_body()
        limit = self._int_argument("limit", 100, 1, 500)
        before = self._int_argument("before", None, 1, 2**62)
        entries = await self.services.run(self.storage.operators.audit, limit, before)
        next_before = entries[-1]["id"] if len(entries) == limit else None
        self.write_json({"entries": entries, "nextBefore": next_before})

    def _int_argument(self, name: str, default, low: int, high: int):
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ApiError(400, "invalid_field", f"{name} must be a whole number from {low} to {high}", name)
        return int(raw)
