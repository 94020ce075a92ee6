"""The kill switch, for operators: `POST /api/admin/halt`, `POST /api/admin/resume`,
`GET /api/admin/halts`.

Body of halt and resume: `{"scope": "all" | "key" | "pair", "keyId"?, "pair"?, "reason"?}`;
`keyId` is required for (and only for) scope `key`, `pair` (`"SOL/USDC"`, symbols or mints)
for scope `pair`. What each scope covers:
- `all`: every new order, every armed order's trigger, every order not started yet.
- `key`: the orders of the key's owner (orders are stored under owner ids, so the key is
  resolved to its owner when the halt is made: `web.orders.owner_of_key`; two keys sharing an owner,
  a rotated key, are halted together).
- `pair`: both directions (`SOL/USDC` halts USDC→SOL too), whoever's the order.

Halting what is halted already answers 200 with the existing halt (its reason unchanged); a new
halt 201. Resuming what is not halted answers 404 (`not_found`): an operator who mistyped a
target learns it at once. Each action is audited (`halt`, `resume`), refused ones too, and
announced on the bus so every web process and worker applies it within a pub/sub hop (every
HALT_REFRESH_SECONDS at worst); this process applies it before it answers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.halts import SCOPES, pair_target
from web.admin import AdminHandler
from web.errors import ValidationError, not_found
from web.orders import owner_of_key
from web.validation import parse_token

FIELDS = ("scope", "keyId", "pair", "reason")
MAX_REASON = 500
MAX_KEY_ID = 64
DEFAULT_REASON = "halted by an operator"


@dataclass(frozen=True)
class HaltRequest:
    """A validated halt or resume: the scope, its stored target, the key id asked for."""

    scope: str
    target: str
    key_id: str | None
    reason: str | None


def parse_halt_request(data: dict[str, Any]) -> HaltRequest:
    """The halt or resume a body asks for (ValidationError otherwise). A key's target is its key
    id here; the handler resolves it to the owner."""
    for name in data:
        if name not in FIELDS:
            raise ValidationError("unknown_field", f"unknown field {name[:64]!r}", name[:64])
    if "scope" not in data:
        raise ValidationError("missing_field", "scope is required", "scope")
    scope = data["scope"]
    if scope not in SCOPES:
        raise ValidationError("invalid_field", f"scope must be one of {', '.join(SCOPES)}", "scope")
    for name, wanted in (("keyId", "key"), ("pair", "pair")):
        if scope == wanted and data.get(name) is None:
            raise ValidationError("missing_field", f"{name} is required with scope {wanted}", name)
        if scope != wanted and data.get(name) is not None:
            raise ValidationError("invalid_field", f"{name} applies only to scope {wanted}", name)
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON):
        raise ValidationError("invalid_field", f"reason must be text of 1 to {MAX_REASON} characters", "reason")
    key_id = _key_id(data["keyId"]) if scope == "key" else None
    target = key_id if scope == "key" else _pair(data["pair"]) if scope == "pair" else ""
    return HaltRequest(scope, target, key_id, reason.strip() if reason else None)


def _key_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_ID or not value.isascii() \
            or not value.isprintable() or " " in value:
        raise ValidationError("invalid_field", f"keyId must be a key id (1 to {MAX_KEY_ID} printable characters)",
                              "keyId")
    return value


def _pair(value: Any) -> str:
    if not isinstance(value, str) or value.count("/") != 1:
        raise ValidationError("invalid_field", "pair must be two tokens as TOKEN/TOKEN, such as SOL/USDC", "pair")
    first, second = (parse_token(name.strip(), "pair") for name in value.split("/"))
    if first.symbol == second.symbol:
        raise ValidationError("same_token", "a pair needs two different tokens", "pair")
    return pair_target(first.symbol, second.symbol)


class _HaltAction(AdminHandler):
    """What halt and resume share: the body, the target resolved (a key to its owner)."""

    async def _request(self) -> tuple[dict, HaltRequest, str]:
        """(the body, the request, the stored target: a key's owner)."""
        data = self.json_body()
        request = parse_halt_request(data)
        self.audit_target = f"{request.scope}:{request.target}" if request.target else request.scope
        target = request.target
        if request.scope == "key":
            target = await owner_of_key(self.services, request.key_id)
            if target is None:
                raise not_found(f"no such key: {request.key_id}")
        return data, request, target


class HaltHandler(_HaltAction):
    """`POST /api/admin/halt`: 201 with the new halt, 200 with the one already active."""

    action = "halt"

    async def post_json(self) -> None:
        data, request, target = await self._request()
        halt, created = await self.services.run(self.storage.halts.halt, request.scope, target, request.key_id,
                                                request.reason or DEFAULT_REASON, self.caller.key_id)
        await self.services.run(self.services.halts.announce)
        await self.answer(halt.to_api(), 201 if created else 200, data)


class ResumeHandler(_HaltAction):
    """`POST /api/admin/resume`: 200 with the halt ended; 404 when that target is not halted."""

    action = "resume"

    async def post_json(self) -> None:
        data, request, target = await self._request()
        halt = await self.services.run(self.storage.halts.resume, request.scope, target, self.caller.key_id)
        if halt is None:
            what = f"{request.scope} {request.target}".strip()
            raise not_found(f"nothing is halted for {what}")
        await self.services.run(self.services.halts.announce)
        await self.answer(halt.to_api(), 200, data)


class HaltsHandler(AdminHandler):
    """`GET /api/admin/halts`: the active halts, oldest first."""

    async def get(self) -> None:
        self.check_body()
        halts = await self.services.run(self.storage.halts.active)
        self.write_json({"halts": [halt.to_api() for halt in halts]})
