"""Following one order over the WebSocket (`/ws?orderId=ID&after=N`) until it ends.

A dropped connection (a web process restarting closes with 1001) is resumed after the
last event seen, so the caller gets every event once, in `seq` order.
"""
from __future__ import annotations

import asyncio
import json
from typing import Callable

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from web.client.api import EngineClient, EngineUnreachable, RequestRefused

TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})
RECONNECTS = 5  # in a row without an event in between
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)


async def follow(client: EngineClient, order_id: str, on_event: Callable[[dict], None], after: int = 0) -> dict:
    """Call `on_event` for each event after `after`; return the terminal event.

    Raises RequestRefused for an error frame (unknown order, refused key) and
    EngineUnreachable when the stream cannot be resumed.
    """
    last_seq, failures = after, 0
    while True:
        try:
            conn = await websocket_connect(HTTPRequest(
                f"{client.ws_base}/ws?orderId={order_id}&after={last_seq}",
                headers=client.auth_headers(), connect_timeout=client.timeout, request_timeout=client.timeout))
        except HTTPClientError as exc:
            if exc.code < 500:  # the handshake was refused (401 with the error shape)
                body = exc.response.body if exc.response is not None and exc.response.body else b""
                raise _handshake_refusal(exc.code, body) from None
            conn, reason = None, exc  # 5xx, or 599: timed out
        except OSError as exc:  # refused or reset: the engine may be restarting
            conn, reason = None, exc
        if conn is not None:
            while (message := await conn.read_message()) is not None:
                frame = json.loads(message)
                if frame.get("type") == "error":
                    error = frame["error"]
                    raise RequestRefused(400 if error["code"] != "not_found" else 404, error["code"],
                                         error["message"], error.get("field"), body=frame)
                if "seq" not in frame or frame["seq"] <= last_seq:
                    continue
                last_seq, failures = frame["seq"], 0
                on_event(frame)
                if frame["status"] in TERMINAL:
                    conn.close()
                    return frame
            reason = f"the stream closed ({conn.close_code} {conn.close_reason or ''})".strip()
        failures += 1
        if failures > RECONNECTS:
            raise EngineUnreachable(f"lost the event stream of order {order_id}: {reason}")
        await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])


def _handshake_refusal(status: int, body: bytes) -> RequestRefused:
    try:
        error = json.loads(body)["error"]
        return RequestRefused(status, error["code"], error["message"], error.get("field"))
    except (ValueError, KeyError, TypeError):
        return RequestRefused(status, f"http_{status}", f"the WebSocket handshake was refused ({status})")
