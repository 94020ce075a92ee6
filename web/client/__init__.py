"""The engine's Python client, and the command-line client built on it.

- `web.client.api`: `EngineClient` (blocking) and everything both clients share: the API's
  paths, how requests are built and answers read, the errors (`ClientError`,
  `RequestRefused`, `EngineUnreachable`).
- `web.client.aio`: `AsyncEngineClient` (asyncio), with the orders' WebSocket streams.
- `web.client.cli` (`engine submit`, `orders`, `order`, `quote`, `tokens`), with
  `render` and `progress` for what it prints.

A client of the public HTTP and WebSocket API only, like any user's program: it never
imports storage or the server's handlers, so what it shows is what the API says.
"""
