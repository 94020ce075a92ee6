"""Who is calling: API keys turned into owners, never kept or logged in clear.

With `API_KEYS` set every `/api` and `/ws` request names a key (`Authorization: Bearer KEY`,
or `?token=KEY` on a WebSocket, which browsers cannot give headers). A key's owner id is
the first 16 hex digits of an HMAC-SHA256 of the key under KEY_ID_SECRET (else the secret
kept in the database, `storage.secrets`): that is what orders store and events carry, so a
database or a bus message never holds a key, and with KEY_ID_SECRET set a copy of them
lets no key be guessed offline.
Without keys the owner is None: everyone sees every order (orders are stored with the owner "").

Operator keys (`ADMIN_KEYS`) are known here too but are not trading keys: they act under
`/api/admin/` (web/admin.py) and handlers refuse them with a 403 `forbidden` (they may only
read orders). Setting either variable turns authentication on. Each key has a public id: a
trading key's is its owner id, an operator key's is `op_` and the same derivation (what the
audit log names as the actor).

Managed trading keys (created through `/api/admin/keys`, web/admin_keys.py) are kept in the
database as digests and found through `web.managed_keys.ManagedKeys`, a cache with batched
lookups: a key from the environment is matched exactly as before (a SHA-256 and one digest
comparison per configured key, nothing more), a managed key is looked up only when no
environment key matched. A managed key's id is derived like an environment key's; its owner
is its own id, or the owner of the key it was created to replace (rotation).

Runs on the IOLoop thread.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Awaitable, Iterable
from urllib.parse import unquote_plus

from tornado.httputil import HTTPServerRequest

from web.errors import ApiError

_DOMAIN = b"dex-engine api key\n"  # keeps these digests apart from any other use of the key


def owner_id(key: str, secret: bytes) -> str:
    """The owner an API key's orders belong to (what is stored in place of the key)."""
    return hmac.new(secret, _DOMAIN + key.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:16]


def _digest(key: str) -> bytes:
    return hashlib.sha256(_DOMAIN + key.encode("utf-8", "surrogateescape")).digest()


def key_digest(key: str) -> str:
    """What the database keeps of a managed key: its SHA-256 digest, in hex."""
    return _digest(key).hex()


@dataclass(frozen=True)
class Caller:
    """Who a request is: the key's public id, the owner its orders are stored under (None
    where no keys are configured), and whether it is an operator key."""

    key_id: str | None
    owner: str | None
    operator: bool = False


ANONYMOUS = Caller(None, None)


def forbidden(message: str) -> ApiError:
    """The spec's 403: a known key that may not do this."""
    return ApiError(403, "forbidden", message)


def unauthorized(message: str) -> ApiError:
    """The spec's 401."""
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def redact_token(request: HTTPServerRequest) -> None:
    """Replace every `token` query value in the request's URI (what every log line shows) by
    `***`. The name is compared decoded, as authentication reads it (`?%74oken=KEY` is a
    token too), whatever the value's encoding."""
    if "token" not in request.query_arguments:
        return
    path, _, query = request.uri.partition("?")
    pairs = query.split("&")
    for i, pair in enumerate(pairs):
        name, sep, _ = pair.partition("=")
        if unquote_plus(name) == "token":
            pairs[i] = "token=***" if sep else pair
    request.uri = f"{path}?{'&'.join(pairs)}"


class KeyRing:
    """The configured keys, as digests, and the managed ones (`managed`, when given); `caller`
    answers who a request is, or raises a 401."""

    def __init__(self, keys: Iterable[str], secret: bytes = b"", admin_keys: Iterable[str] = (),
                 managed=None, enabled: bool = False):
        self._known: list[tuple[bytes, Caller]] = []
        self.environment_ids: list[str] = []  # the API_KEYS keys' ids, in their order
        for key in keys:
            owner = owner_id(key, secret)
            self._known.append((_digest(key), Caller(owner, owner)))
            self.environment_ids.append(owner)
        self.operator_ids = {"op_" + owner_id(key, secret) for key in admin_keys}
        for key in admin_keys:
            self._known.append((_digest(key), Caller("op_" + owner_id(key, secret), None, operator=True)))
        self._secret = secret
        self.managed = managed  # web.managed_keys.ManagedKeys, or None: no managed keys
        self._enabled = enabled or bool(self._known)  # `enabled`: managed keys exist

    def id_of(self, key: str) -> str:
        """The public id of a (new) trading key: derived as an API_KEYS key's."""
        return owner_id(key, self._secret)

    @property
    def enabled(self) -> bool:
        """True when keys are configured (requests must name one): API_KEYS or ADMIN_KEYS set,
        or managed keys created (turning them off would open the API to everyone)."""
        return self._enabled

    def caller(self, request: HTTPServerRequest, allow_token: bool = False) -> Caller | Awaitable[Caller]:
        """Who the request is (ANONYMOUS when no keys are configured), or an awaitable of it when
        a managed key must be looked up. `allow_token`: a WebSocket handshake, which may give
        the key as `?token=` instead of the header."""
        if not self._enabled:
            return ANONYMOUS
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, key = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise unauthorized("send the API key as Authorization: Bearer KEY")
            return self._match(key.strip())
        tokens = request.query_arguments.get("token") if allow_token else None
        if tokens is not None:
            if len(tokens) != 1:
                raise unauthorized("give the API key once")
            return self._match(tokens[0].decode("utf-8", "surrogateescape"))
        raise unauthorized("an API key is required: Authorization: Bearer KEY"
                           + (" (or ?token=KEY on a WebSocket)" if allow_token else ""))

    def _match(self, key: str) -> Caller | Awaitable[Caller]:
        # Digests of equal length, compared with every known key without stopping at a match:
        # the time taken says nothing about the key or about which one matched.
        digest = _digest(key)
        found = None
        for known, caller in self._known:
            if hmac.compare_digest(digest, known):
                found = caller
        if found is not None:
            return found
        if self.managed is None:
            raise unauthorized("unknown API key")
        # A managed key: a dict lookup of its digest (a hash of a hash: its timing tells nothing
        # useful about the key), else the database.
        hexdigest = digest.hex()
        cached = self.managed.cached(hexdigest)
        if cached is None:
            return self._look_up(hexdigest)
        if cached is False:
            raise unauthorized("unknown API key")
        return Caller(cached[0], cached[1])

    async def _look_up(self, hexdigest: str) -> Caller:
        found = await self.managed.find(hexdigest)
        if found is None:
            raise unauthorized("unknown API key")
        return Caller(found[0], found[1])
