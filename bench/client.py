"""The benchmark's load client: the engine's own asyncio client (web.client.aio) on one
loop, its requests over keep-alive HTTP/1.1 connections, and a WebSocket listener per
order, as the API's users do."""
from __future__ import annotations

import asyncio
import time

from web.client.aio import AsyncEngineClient
from web.client.api import TERMINAL

# The API key every request carries (`python -m bench.run --keys`), None for an open engine.
API_KEY: str | None = None


def engine_client(port: int, connections: int) -> AsyncEngineClient:
    """The engine's client of the web process on `port`, with the bench's key: at most
    `connections` requests in flight, each on a kept-alive connection; every method answers
    `(status, body)` (its Answer, with `sent_at` and `answered_at`) rather than raising."""
    return AsyncEngineClient(f"http://127.0.0.1:{port}", API_KEY, raise_error=False, connections=connections)


class Stream:
    """What one WebSocket listener of one order saw."""

    def __init__(self):
        self.frames: list[dict] = []
        self.confirmed_at: float | None = None  # time.monotonic() when the `confirmed` frame arrived
        self.close_code: int | None = None
        self.error: str | None = None

    @property
    def complete(self) -> bool:
        """seq 1..n without a gap or a repeat, ending on a terminal status, closed normally."""
        return (self.error is None and bool(self.frames)
                and [f.get("seq") for f in self.frames] == list(range(1, len(self.frames) + 1))
                and self.frames[-1].get("status") in TERMINAL
                and all(f.get("status") not in TERMINAL for f in self.frames[:-1]))


async def listen(client: AsyncEngineClient, ws_path: str, timeout: float) -> Stream:
    """Follow one order's stream (its `links.ws`) until the server closes it (or `timeout` passes).

    One deadline for the whole stream rather than a timer per frame: the client shares
    the machine's cores with the server, so it keeps its own work small.
    """
    stream = Stream()
    conn = None
    try:
        async with asyncio.timeout(timeout):
            conn = await client.connect(ws_path)
            async for frame in conn:
                stream.frames.append(frame)
                if frame.get("status") == "confirmed":
                    stream.confirmed_at = time.monotonic()
            stream.close_code = conn.close_code
    except TimeoutError:
        stream.error = f"still open after {timeout}s"
    except Exception as exc:  # noqa: BLE001 - reported per stream, counted as incomplete
        stream.error = repr(exc)
    finally:
        if conn is not None:
            conn.close()
    return stream


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]
